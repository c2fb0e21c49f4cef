//! Issue #16 tests: http (filled in by its branch).
