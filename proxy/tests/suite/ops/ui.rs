//! The `/ui` status page in a real headless Chromium.
