//! Per-pack rate windows (contract §7.1: secrets.get, RUMI_SECRET_GET_RATE_LIMIT).
