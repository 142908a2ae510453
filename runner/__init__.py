"""shapebench runner: builds models, runs backends, times phases, writes run directories.

Importing this package does not import torch: plan validation and the model registry are
usable by the dashboard (and the hosted mode) without it. Never imports streamlit.
"""

from vocabulary import tool_version

TOOL_VERSION = tool_version()  # pyproject.toml is the one place it is written
