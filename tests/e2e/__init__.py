"""End-to-end tests that drive JupyterLab in headless Chromium."""
