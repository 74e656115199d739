"""`python -m bench`: the quick load profile; `python -m bench --full` for the large sizes."""

from bench.load import main

if __name__ == "__main__":  # not when a generator process (bench/generators.py) imports it
    main()
