"""`python -m trainer.study.report STUDY_DIR`: the command is trainer/commands/report.py."""
from trainer.commands.report import main

if __name__ == "__main__":
    main()
