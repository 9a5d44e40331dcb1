"""`python -m trainer.export`: the command is trainer/commands/export.py."""
from trainer.commands.export import main

if __name__ == "__main__":
    main()
