package integration

import "testing"

func security(t *testing.T, cfg reliabilityConfig, c *tally)     {}
