"""The MedDiffFM module's library, importable without Qt (the tests use slicer-core):

- tasks: the task table (panels, engine arguments, outputs) and the panel settings as plain values;
- bridge: Slicer nodes <-> the files the engine reads and writes, with exact geometry;
- runner: the engine in a child process, its JSON progress lines, cancel;
- logic: one run from nodes to nodes (Processor.process is the batch API);
- batch: the headless batch script's argument handling;
- models, deps: the model cards and the missing Python packages, read without importing torch.
"""
