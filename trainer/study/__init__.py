"""The four-part ViT study (from scratch, pretrained, small model, distilled) on top of the library's public
API: `python -m trainer.study --preset hw2|demo`; its report: `python -m trainer.study.report DIR`."""
