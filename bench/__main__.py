"""`python -m bench`: the quick load profile; `python -m bench --full` for the large sizes."""

from bench.load import main

main()
