"""Receipts: signed, canonical records of what each answer was, where it ran and what
it cost, and the transparency log of the verdicts and keys they rely on.

No web framework and no SQL here: storage is reached through `ReceiptStore`.
"""

from teegate.receipts._ear import EAR_PROFILE, ear_claims, ear_jwt
from teegate.receipts._merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    inclusion_root,
    leaf_hash,
    node_hash,
    root,
    root_and_paths,
    verify_consistency,
    verify_inclusion,
)
from teegate.receipts._receipt import RECEIPT_VERSION, Served, receipt_body, verdict_entry
from teegate.receipts._service import (
    MAX_LEAVES_PAGE,
    Quoter,
    ReceiptService,
    TransparencyLog,
    new_receipt_id,
)
from teegate.receipts._signing import (
    BATCH_HEAD_CONTEXT,
    RECEIPT_CONTEXT,
    RECEIPT_V1_CONTEXT,
    TREE_HEAD_CONTEXT,
    SigningKey,
    b64,
    canonical,
    key_id,
    sign_batch,
    unb64,
    verify_receipt_signature,
    verify_signature,
    verify_signed,
)
from teegate.receipts._store import LogEntry, ReceiptStore, StoredKey, StoredReceipt

__all__ = [
    "BATCH_HEAD_CONTEXT",
    "EAR_PROFILE",
    "EMPTY_ROOT",
    "MAX_LEAVES_PAGE",
    "RECEIPT_CONTEXT",
    "RECEIPT_V1_CONTEXT",
    "RECEIPT_VERSION",
    "TREE_HEAD_CONTEXT",
    "LogEntry",
    "Quoter",
    "ReceiptService",
    "ReceiptStore",
    "Served",
    "SigningKey",
    "StoredKey",
    "StoredReceipt",
    "TransparencyLog",
    "b64",
    "canonical",
    "consistency_proof",
    "ear_claims",
    "ear_jwt",
    "inclusion_proof",
    "inclusion_root",
    "key_id",
    "leaf_hash",
    "new_receipt_id",
    "node_hash",
    "receipt_body",
    "root",
    "root_and_paths",
    "sign_batch",
    "unb64",
    "verdict_entry",
    "verify_consistency",
    "verify_inclusion",
    "verify_receipt_signature",
    "verify_signature",
    "verify_signed",
]
