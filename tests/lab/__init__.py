"""Network-namespace lab: real NATs (nftables masquerade) for end-to-end scenarios."""
