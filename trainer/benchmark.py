"""`python -m trainer.benchmark`: the command is trainer/commands/benchmark.py."""
from trainer.commands.benchmark import main

if __name__ == "__main__":
    main()
