"""What tests, benchmarks and `make demo` share: the daemon-process helper (`support.daemon`),
the signal-cli-rest-api emulator (`support.signal_service`) and the demo (`support.demo`).

Not installed with the package. It imports the product's packages and the standard library,
never `tests` or `bench` (an import-linter contract).
"""
