"""Train, fine-tune and distill timm Vision Transformers with Accelerate."""
