"""`python -m trainer.predict --run RUN IMAGE_OR_FOLDER...`: the command is trainer/commands/predict.py."""
from trainer.commands.predict import main

if __name__ == "__main__":
    main()
