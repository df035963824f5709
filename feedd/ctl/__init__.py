"""``feedctl``'s insides: the HTTP client, the argument parser, commands and their output.

``feedd.feedctl`` is the entry point; it maps every outcome to an exit status.
"""
