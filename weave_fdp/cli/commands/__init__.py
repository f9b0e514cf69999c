"""CLI command modules: each module exposes COMMANDS, a list of click commands/groups.

main.py discovers every module here, so adding a command never edits a shared file.
"""
