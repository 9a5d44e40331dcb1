"""Train or fine-tune a timm ViT: `accelerate launch train_cls.py --help`."""
from trainer.commands.train import main_cls

if __name__ == "__main__":
    main_cls()
