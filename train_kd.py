"""Distill a timm ViT student from a train_cls.py teacher: `accelerate launch train_kd.py --teacher RUN --help`."""
from trainer.commands.train import main_kd

if __name__ == "__main__":
    main_kd()
