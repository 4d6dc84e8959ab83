"""What uses a trained checkpoint: load it (`loading`), score it (`evaluate`, `dnsmos`),
run it on recordings (`enhance`), export it (`export`); and the public model to compare
with (`deepfilternet`)."""
