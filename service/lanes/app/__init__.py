"""The App API lane: transactional sends and broadcast triggers (queued, rate-limited, at
most once) and reads (proxied under the same cluster-wide budget)."""
