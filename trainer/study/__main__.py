"""`python -m trainer.study`: the command is trainer/commands/study.py."""
from trainer.commands.study import main

if __name__ == "__main__":
    main()
