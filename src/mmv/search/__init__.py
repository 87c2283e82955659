"""Search your own videos by sentence, sound or image: ``mmv index``, ``mmv search``, ``mmv serve``.

* :mod:`mmv.search.library`: the library folder (SQLite metadata and vectors, ``library.json``);
* :mod:`mmv.search.indexer`: segments of media files embedded into a library, incrementally (:func:`index_sources`);
* :mod:`mmv.search.query`: queries, the space each query meets each side of the segments in, moments
  (:class:`Searcher`);
* :mod:`mmv.search.vector_index`: exact search, or an approximate FAISS index for large libraries;
* :mod:`mmv.search.server`: the search page and its JSON API.

>>> from mmv.search import IndexOptions, Query, Searcher, index_sources
>>> index_sources(mmv.load("mmv_demo/model"), ["mmv_demo/corpus/test"], "lib", model_source="mmv_demo/model")
>>> Searcher("lib").search(Query("text", text="seven"), target="video", top_k=5)
"""
from mmv.search.indexer import IndexOptions as IndexOptions
from mmv.search.indexer import index_sources as index_sources
from mmv.search.indexer import merge_libraries as merge_libraries
from mmv.search.library import Library as Library
from mmv.search.library import LibraryError as LibraryError
from mmv.search.query import Moment as Moment
from mmv.search.query import Query as Query
from mmv.search.query import Searcher as Searcher
