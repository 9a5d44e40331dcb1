"""`python -m trainer.evaluate`: the command is trainer/commands/evaluate.py."""
from trainer.commands.evaluate import main

if __name__ == "__main__":
    main()
