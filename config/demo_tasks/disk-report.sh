#!/usr/bin/env bash
# Demo task: reports free space where the scheduler keeps its state.
df -h "$(dirname "$MOLTSCHED_DB")" | tail -n 1
