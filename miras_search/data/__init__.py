"""Trial data: synthetic recall tasks, the MAD suite, the embedded byte-level corpus, user files, tokenizers.

Every source gives reproducible ``Batch(inputs [B, T], targets [B, T])`` for (seed, split, step);
targets are -100 where no loss is taken. Special ids are in ``miras_search.data.vocab``.
"""

from miras_search.data.batch import Batch, derive_seed, generator
from miras_search.data.cache import cache_dir
from miras_search.data.corpus import load_corpus
from miras_search.data.documents import split_documents
from miras_search.data.files import InvalidUTF8Warning
from miras_search.data.mad_compression import MadCompression
from miras_search.data.mad_copy import MadSelectiveCopy
from miras_search.data.mad_fuzzy_recall import MadFuzzyRecall
from miras_search.data.mad_memorization import MadMemorization
from miras_search.data.mad_recall import MadNoisyRecall, MadRecall
from miras_search.data.mad_suite import MAD_TASKS, PRESETS, mad_preset, mad_scores
from miras_search.data.metrics import answer_accuracy, sequence_accuracy
from miras_search.data.mqar import MQAR
from miras_search.data.niah import NeedleInHaystack
from miras_search.data.noisy_recall import NoisyRecall
from miras_search.data.selective_copy import SelectiveCopy
from miras_search.data.spec import (
    SYNTHETIC_TASKS,
    TASKS,
    DataMix,
    DataSpec,
    Source,
    iter_batches,
    open_source,
    parse_data_spec,
    parse_data_specs,
)
from miras_search.data.store import TokenStore, build_store
from miras_search.data.stream import TextStream
from miras_search.data.text_sources import Files, HFDataset, TextCorpus, TextSource
from miras_search.data.tokenizer import ByteTokenizer, FileTokenizer, Tokenizer, load_tokenizer
from miras_search.data.vocab import BOS, EOS, IGNORE_INDEX, PAD, SEP, VOCAB_SIZE

__all__ = [
    "BOS",
    "EOS",
    "IGNORE_INDEX",
    "MAD_TASKS",
    "MQAR",
    "PAD",
    "PRESETS",
    "SEP",
    "SYNTHETIC_TASKS",
    "TASKS",
    "VOCAB_SIZE",
    "Batch",
    "ByteTokenizer",
    "DataMix",
    "DataSpec",
    "FileTokenizer",
    "Files",
    "HFDataset",
    "InvalidUTF8Warning",
    "MadCompression",
    "MadFuzzyRecall",
    "MadMemorization",
    "MadNoisyRecall",
    "MadRecall",
    "MadSelectiveCopy",
    "NeedleInHaystack",
    "NoisyRecall",
    "SelectiveCopy",
    "Source",
    "TextCorpus",
    "TextSource",
    "TextStream",
    "TokenStore",
    "Tokenizer",
    "answer_accuracy",
    "build_store",
    "cache_dir",
    "derive_seed",
    "generator",
    "iter_batches",
    "load_corpus",
    "load_tokenizer",
    "mad_preset",
    "mad_scores",
    "open_source",
    "parse_data_spec",
    "parse_data_specs",
    "sequence_accuracy",
    "split_documents",
]
