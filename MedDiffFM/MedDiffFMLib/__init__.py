"""The MedDiffFM module's library, importable without Qt (the tests use slicer-core):

- tasks: the task table (panels, engine arguments, outputs) and the panel settings as plain values;
- bridge: Slicer nodes <-> the files the engine reads and writes, with exact geometry;
- runner: the engine in a child process, its JSON progress lines, cancel;
- jobs: one run from nodes to nodes (Processor.process is the batch API); logic is its old name;
- panel: whether Apply is on, and why not;
- batch: the headless batch script's argument handling;
- models: the model cards, read without importing torch;
- deps: the supported Slicer versions, the engine's unmet Python packages (by version, from metadata,
  without importing them) and the install sequence.
"""
