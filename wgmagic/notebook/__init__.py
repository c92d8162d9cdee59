"""The notebook edge: the IPython magics, their argument parsing, status text, the dashboard and plots."""
