"""The fine-tuning pipeline behind `tunescope train`: config -> data -> model -> Trainer.

Modules: `config` (validated YAML + overrides), `data` (read, check, split, tokenize),
`models` (load, freeze, LoRA), `metrics` (scikit-learn), `recipe` (builds and runs
`transformers.Trainer` with `tunescope.TrainerCallback`), `builtin` (the shipped model and
dataset), `progress` (the terminal display). Heavy libraries are imported where used.
"""
