"""Everything that runs inside a rank process, and nothing of the controller.

A rank process (harness.pool starts them; under torchrun, harness.launch is one) runs ``worker.main``: it joins the
process group and then serves calls. Each case kind has one entry here, ``run(ctx, *, spec, options, **request)``,
registered with its kind in harness.kinds (``CaseKind.rank_entry``):

- ``module.run``: one SyncBatchNorm layer, its training and eval phases, every quantity of harness.quantities read;
- ``op.run``: one of the five kernels called alone;
- ``model.run``: a small network converted to the SUT and trained under DistributedDataParallel.

``options`` is the run's harness.options.RankOptions (the options marked ``rank=True``), one frozen value;
``prepare.implementation`` turns it into the SUT factory with its kernels installed. The package imports the core
(specs, data, quantities, options) and the SUT modules, never the controller: harness.kinds, harness.pool,
harness.expected, harness.catalogue, harness.verdict, harness.result, reports (an import-linter contract).
"""
