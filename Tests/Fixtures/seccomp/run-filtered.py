#!/usr/bin/python3
"""Runs a command under a seccomp allow-list, as systemd's SystemCallFilter= does: the first system
call not named in NAMES_FILE (one per line) kills the process with SIGSYS.

Usage: run-filtered.py NAMES_FILE COMMAND [ARGUMENT...]
"""
import os
import sys

import seccomp

names = open(sys.argv[1]).read().split()
syscall_filter = seccomp.SyscallFilter(defaction=seccomp.KILL_PROCESS)
for name in names:
    try:
        syscall_filter.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError, OSError):
        # A name systemd lists for other architectures or kernels, unknown here: not allowed.
        pass
syscall_filter.load()
os.execv(sys.argv[2], sys.argv[2:])
