#!/usr/bin/env bash
# Demo task: fails about one run in three, so alerts and error counts have something to show.
if (( RANDOM % 3 == 0 )); then
  echo "could not reach the example service" >&2
  exit 3
fi
echo "all good"
