"""`python -m trainer.sweep`: the command is trainer/commands/sweep.py."""
from trainer.commands.sweep import main

if __name__ == "__main__":
    main()
