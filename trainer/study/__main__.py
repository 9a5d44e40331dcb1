"""python -m trainer.study --preset hw2|demo --output-dir DIR"""
from .four_parts import main

if __name__ == "__main__":
    main()
