"""The commands: each parses its command line, calls the library and prints. Nothing in the library imports them;
`python -m trainer.X` and the root scripts are thin doors to these modules."""
