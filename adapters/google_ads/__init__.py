"""Google Ads through the official ``google-ads`` SDK (GAQL over gRPC SearchStream)."""
