"""`python -m trainer.push --run RUN --repo-id USER/NAME`: the command is trainer/commands/push.py."""
from trainer.commands.push import main

if __name__ == "__main__":
    main()
