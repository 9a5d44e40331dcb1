"""`python -m trainer.plot RUN...`: the command is trainer/commands/plot.py."""
from trainer.commands.plot import main

if __name__ == "__main__":
    main()
