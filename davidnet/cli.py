"""The command lines' parser: argparse, with a bad flag refused in one line.

argparse answers a bad flag with its whole usage (one line per flag group,
dozens here) and then the error; our commands answer every user error with
one line saying what is wrong and where to look, and exit code 2.
"""

import argparse


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message} ({self.prog} --help lists the flags)\n")
