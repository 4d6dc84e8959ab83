"""The data a run trains on: the embedded, procedurally generated speech and noise,
folders of real audio (pairs, or speech mixed with noise and room responses), token
utterances for the transducer, augmentation, and the resumable loaders."""
