"""Cache the frozen part's activations on disk, so that training runs only the part that learns.

With the first ``k`` stages frozen (BatchNorm policy ``"frozen"``), those stages compute the same function of each
image in every epoch. :class:`FeatureCache` runs them once (eval mode, ``torch.inference_mode``, batched), stores
their output under ``convlab_home()/features`` and serves it memory-mapped as a :class:`CachedFeatures` dataset;
training then runs only ``model.split_at(k)[1]`` (the later stages and the head). ``k = "all"`` caches the pooled
``spec.feature_dim`` vectors ("head only").

What makes this safe (fastai 0.7 keyed its cache by architecture and size only, and silently cached augmented
images):

- **The key covers everything that changes the content**: backbone name, a sha256 of the frozen stages' actual
  state dict (fine-tuned or random weights differ), the cut point, the preprocessing, the data set's fingerprint
  (every image and label, hashed again on every call, so an image or label changed in place is a new key) and its
  own transform, the storage dtype, and the torch / torchvision versions.
- **Transforms are keyed by a stable description** (:func:`describe_transform`): a :class:`Preprocess`'s fields, a
  torchvision transform's parameters, or what a custom callable's ``cache_key()`` method returns. Anything else is
  refused with an explanation: its ``repr`` (often a memory address) says nothing about what it computes.
- **Random transforms are refused** with an explanation: a cache holds one fixed view of each image, so an
  augmentation would be drawn once and replayed every epoch. Augment after the frozen part, or train uncached.
- **Nothing partial is ever served.** Extraction writes one shard per batch (temporary file + ``os.replace``)
  and records it in ``partial/progress.json`` with its sha256; an interrupted run resumes from the shards that
  check out. Only when all are present are they joined into ``features.npy``, renamed into place, and a
  ``manifest.json`` (sizes and sha256 of the files) written last. A missing manifest means "not cached".
- **Corruption is detected**: on open the files' sizes and (by default) sha256 are checked against the manifest;
  a bad entry is deleted and rebuilt with a warning.
- **Any number of processes may share the folder** (one machine or several): reading needs no lock (every file
  appears whole, by rename), and whoever finds an entry missing or damaged takes the entry's lock (``.lock`` in
  its folder, :func:`convlab.atomicio.file_lock`), looks again, and only then extracts, resumes or deletes. The
  others wait for it and then read the finished entry, so the frozen part runs once and no one sees a partial
  folder. A killed holder's lock is released by the kernel, and the next process resumes from its shards.

The package, one idea per module: :mod:`~convlab.featcache.keys` (what a cache entry is keyed by),
:mod:`~convlab.featcache.randomness` (the refusal of random transforms), :mod:`~convlab.featcache.extraction`
(running the frozen part), :mod:`~convlab.featcache.store` (the sharded, locked store on disk) and
:mod:`~convlab.featcache.views` (the data sets it serves). ``from convlab.featcache import FeatureCache`` and the
other names below work as they always did.
"""

from convlab.featcache.extraction import extract_features
from convlab.featcache.keys import CacheKey, cache_key, dataset_fingerprint, describe_transform, state_dict_sha256
from convlab.featcache.randomness import RandomTransformError, check_deterministic
from convlab.featcache.store import CacheEntry, FeatureCache
from convlab.featcache.views import CachedFeatures, ExtractionReport

__all__ = [
    "CacheEntry",
    "CacheKey",
    "CachedFeatures",
    "ExtractionReport",
    "FeatureCache",
    "RandomTransformError",
    "cache_key",
    "check_deterministic",
    "dataset_fingerprint",
    "describe_transform",
    "extract_features",
    "state_dict_sha256",
]
