//! Write-ahead log for lancebranch (filled by the WAL issue).
