"""WireGuard, sans-I/O (the whitepaper's protocol): `device.Device` drives peers (`peer`), handshakes
(`handshake`, Noise_IKpsk2), cookies (`cookie`), keypairs (`keypair`), cryptokey routing (`allowedips`),
messages (`messages`) and timers (`timers`, `constants`); `events` is what it tells its caller."""
