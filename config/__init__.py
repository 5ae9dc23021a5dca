"""Configuration: the schema (`config.schema`, its keys about time in `config.times`), the
loader (`config.loader`), which reads the file's text as data first (`config.raw`), a fast
locator of the state directory for the CLI (`config.locate`), and the demo configuration
`make run` uses.

Nothing is imported here, so `config.locate` stays cheap for `moltsched status`.
"""
