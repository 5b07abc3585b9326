"""Downstream evaluation of encoders: fine-tuning, linear probe and retrieval (docs/method.md §7).

One module per protocol (`finetune`, `linear`, `retrieval`), each a `vtdl` sub-command with
`add_arguments(parser)` and `run(args)`; what they share lives in `common`.
"""
