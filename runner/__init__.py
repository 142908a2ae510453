"""shapebench runner: builds models, runs backends, times phases, writes run directories.

Importing this package does not import torch: plan validation and the model registry are
usable by the dashboard (and the hosted mode) without it. Never imports streamlit.
"""

TOOL_VERSION = "0.1.0"
