"""Meta Ads (Graph API) through the official ``facebook-business`` SDK."""
