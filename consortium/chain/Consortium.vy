#pragma version 0.4.3
#pragma evm-version cancun
"""
@title Consortium round ledger
@notice Replaces the trusted aggregator of a federated LoRA run: stake, stake-weighted role
        draw, commitments of updates, candidate aggregates, commit-reveal votes, rewards and
        slashes. Every loop is bounded by MAX_ROLES or MAX_CANDIDATES (see docs/contract.md).
"""

MAX_PROPOSERS: constant(uint256) = 32
MAX_VOTERS: constant(uint256) = 32
MAX_ROLES: constant(uint256) = 64
MAX_CANDIDATES: constant(uint256) = 8
MAX_URI: constant(uint256) = 256
BPS: constant(uint256) = 10000
TREE_DEPTH: constant(uint256) = 40  # Fenwick tree over at most 2**40 participant indices
# Two versions of every weight (tree nodes, totals, a participant's weight), packed in one slot:
# tag << 192 | before << 96 | latest. `latest` counts from round `tag` on, `before` for earlier rounds.
# Every change is written for round_id + 1, so the draw of the open round reads the stakes as they
# were when it opened (before any seed could be known) and a change counts from the next round on.
MASK96: constant(uint256) = 2**96 - 1
# a revealed seed commitment: the slot stays nonzero (a zero-to-nonzero store costs 20,000 gas a round)
SEED_USED: constant(bytes32) = 0x0000000000000000000000000000000000000000000000000000000000000001

# round states
IDLE: constant(uint256) = 0  # no round opened yet
DONE: constant(uint256) = 3  # the last round is finalized or cancelled (never back to 0: a zero to
                             # nonzero store would cost 20,000 gas every round)
SEEDING: constant(uint256) = 1  # open: seed commit / reveal, roles not drawn yet
DRAWN: constant(uint256) = 2  # roles drawn: commit, candidate, vote commit, vote reveal

# role kinds, packed into Participant.role
PROPOSER: constant(uint256) = 1
VOTER: constant(uint256) = 2
# role status bits
COMMITTED: constant(uint256) = 1
REVEALED: constant(uint256) = 2
# a proposer's vote (with `proposers_vote`): its COMMITTED bit is its update's
VOTE_COMMITTED: constant(uint256) = 4
VOTE_REVEALED: constant(uint256) = 8

# outcomes
REJECTED: constant(uint256) = 0
ACCEPTED: constant(uint256) = 1
NO_QUORUM: constant(uint256) = 2
CANCELLED: constant(uint256) = 3

# slash reasons
SLASH_REJECTED: constant(uint256) = 1
SLASH_MINORITY: constant(uint256) = 2
SLASH_NO_SHOW: constant(uint256) = 3
SLASH_EXCLUDED: constant(uint256) = 4  # the proposal bond of an update the winning candidate left out
# an update the winning candidate left out whose blob the revealed voters jointly report missing after the
# retrieval window: at least MIN_MISSING_REPORTS of them, holding more than half of the revealed weight
SLASH_UNAVAILABLE: constant(uint256) = 5
MIN_MISSING_REPORTS: constant(uint256) = 2  # one party's claim (a voter, or its store) never slashes
MIN_ELIGIBLE: constant(uint256) = 2  # a proposer and a voter: below it the draw cancels the round
# contribution removal (docs/contract.md, *Removal*): a proposal lapses once this many rounds opened after
# it unless it was approved (an approved one blocks the next opening until it is executed); the approvers
# of one proposal are at most MAX_APPROVERS (their weight is summed at execution: a bounded loop)
REMOVAL_ROUNDS: constant(uint256) = 10
MAX_APPROVERS: constant(uint256) = 128
MAX_REMOVALS: constant(uint256) = 32  # executed removals per deployment: each undoes a range of rounds
MAX_REWIND: constant(uint256) = 256  # a removal goes back at most this many rounds (the proof's length)


struct Participant:
    stake: uint256
    balance: uint256
    index: uint256  # 1-based position in the Fenwick tree; 0 = never registered
    weight: uint256  # what the tree holds for it (stake if eligible, else 0), two versions (MASK96)
    exit_block: uint256  # 0 = not exiting; else complete_exit is allowed from this block
    registered: bool
    role: uint256  # round << 32 | kind << 24 | slot << 16 | status << 8 | choice
    data_size: uint256  # training examples declared at registration: bounds the sample count it claims


struct Params:
    min_stake: uint256
    seed_blocks: uint256
    commit_blocks: uint256
    candidate_blocks: uint256
    vote_commit_blocks: uint256
    vote_reveal_blocks: uint256
    exit_cooldown: uint256
    n_proposers: uint256
    n_voters: uint256
    reward_per_round: uint256
    slash_rejected_bps: uint256
    slash_minority_bps: uint256
    slash_no_show_bps: uint256
    quorum_bps: uint256
    proposal_bond_bps: uint256
    proposers_vote: bool  # the round's proposers vote too: seats after the drawn voters' (docs/contract.md)


struct RoundInfo:
    round_id: uint256
    state: uint256
    base_hash: bytes32
    open_block: uint256
    seed_block: uint256
    draw_block: uint256
    commit_end: uint256
    candidate_end: uint256
    vote_commit_end: uint256
    vote_reveal_end: uint256
    n_proposers: uint256
    n_voters: uint256
    n_candidates: uint256
    voter_weight: uint256
    revealed_weight: uint256


event Deployed:
    genesis_hash: bytes32
    min_stake: uint256

event Registered:
    who: indexed(address)
    index: uint256
    stake: uint256
    data_size: uint256

event ToppedUp:
    who: indexed(address)
    amount: uint256
    stake: uint256

event ExitAnnounced:
    who: indexed(address)
    exit_block: uint256

event ExitCompleted:
    who: indexed(address)
    amount: uint256

event Withdrawn:
    who: indexed(address)
    amount: uint256

event Funded:
    who: indexed(address)
    amount: uint256

event RoundOpened:
    round_id: indexed(uint256)
    base_hash: bytes32
    opener: address
    seed_block: uint256

event SeedCommitted:
    round_id: indexed(uint256)
    who: indexed(address)
    commitment: bytes32

event SeedRevealed:
    round_id: indexed(uint256)
    who: indexed(address)
    seed: bytes32

event RoundDrawn:
    round_id: indexed(uint256)
    seed: bytes32
    proposers: DynArray[address, MAX_PROPOSERS]
    voters: DynArray[address, MAX_VOTERS]
    commit_end: uint256
    candidate_end: uint256
    vote_commit_end: uint256
    vote_reveal_end: uint256

event UpdateCommitted:
    round_id: indexed(uint256)
    who: indexed(address)
    slot: uint256
    update_hash: bytes32
    uri: String[MAX_URI]

event CandidatePosted:
    round_id: indexed(uint256)
    who: indexed(address)
    candidate: uint256
    candidate_hash: bytes32
    flagged: uint256
    excluded: uint256

event VoteCommitted:
    round_id: indexed(uint256)
    who: indexed(address)
    commitment: bytes32

event VoteRevealed:
    round_id: indexed(uint256)
    who: indexed(address)
    choice: uint256
    flags: uint256
    missing: uint256
    weight: uint256

event Rewarded:
    round_id: indexed(uint256)
    who: indexed(address)
    amount: uint256

event Slashed:
    round_id: indexed(uint256)
    who: indexed(address)
    amount: uint256
    reason: uint256

event RoundFinalized:
    round_id: indexed(uint256)
    outcome: uint256
    winner: uint256
    global_hash: bytes32
    accept_weight: uint256
    revealed_weight: uint256

event RemovalProposed:
    removal_id: indexed(uint256)
    target: indexed(address)
    from_round: uint256
    proposer: address
    deadline: uint256

event RemovalApproved:
    removal_id: indexed(uint256)
    who: indexed(address)

event RemovalExecuted:
    removal_id: indexed(uint256)
    target: indexed(address)
    from_round: uint256
    base_hash: bytes32
    approve_weight: uint256
    others_weight: uint256


# --- parameters (fixed at deployment; immutables live in the code: no storage reads) ---
MIN_STAKE: immutable(uint256)
SEED_BLOCKS: immutable(uint256)
COMMIT_BLOCKS: immutable(uint256)
CANDIDATE_BLOCKS: immutable(uint256)
VOTE_COMMIT_BLOCKS: immutable(uint256)
VOTE_REVEAL_BLOCKS: immutable(uint256)
EXIT_COOLDOWN: immutable(uint256)
N_PROPOSERS: immutable(uint256)
N_VOTERS: immutable(uint256)
REWARD_PER_ROUND: immutable(uint256)
SLASH_REJECTED_BPS: immutable(uint256)
SLASH_MINORITY_BPS: immutable(uint256)
SLASH_NO_SHOW_BPS: immutable(uint256)
QUORUM_BPS: immutable(uint256)
PROPOSAL_BOND_BPS: immutable(uint256)
PROPOSERS_VOTE: immutable(bool)

# --- participants ---
participants: public(HashMap[address, Participant])
index_owner: public(HashMap[uint256, address])
n_indices: public(uint256)
tree: HashMap[uint256, uint256]  # Fenwick tree of weights by participant index, two versions
total_packed: uint256  # sum of the weights, two versions
eligible_packed: uint256  # participants with a positive weight, two versions
reward_pool: public(uint256)
global_hash: public(bytes32)

# --- the current round (slots reused from round to round: history lives in the events) ---
round_id: public(uint256)
state: uint256
open_block: uint256  # seed commits until open_block + SEED_BLOCKS, reveals for SEED_BLOCKS more
draw_block: uint256  # every later deadline is draw_block + the immutable phase lengths
seed_acc: uint256
seed_commits: HashMap[address, bytes32]
proposers: address[MAX_PROPOSERS]
voter_slots: uint256[MAX_VOTERS]  # weight at the draw << 160 | address: one slot per voting seat
vote_commits: bytes32[MAX_VOTERS]
voter_weight: uint256  # total weight of the voting seats (the quorum's base)
draw_total: uint256  # total weight in the round's draw: a winner needs more than a third of it
round_shape: uint256  # the round's proposers << 8 | drawn voters: fewer than P, V when few are eligible
posted_round: HashMap[address, uint256]  # the last round in which this account posted a candidate
candidate_hashes: public(bytes32[MAX_CANDIDATES])
candidate_flags: public(uint256[MAX_CANDIDATES])
# proposer slots the candidate's aggregator left out without evidence: neither rewarded nor slashed
candidate_excluded: public(uint256[MAX_CANDIDATES])
n_cand_tagged: uint256  # round_id << 8 | number of candidates: no reset needed at the draw
# tallies tagged with the round (round_id << 192 | weight) so the slots are reused, never reset:
# [0] reject, [k] accept candidate k
tallies: uint256[MAX_CANDIDATES + 1]
# per proposer slot, the revealed voters reporting its blob missing, tagged like the tallies:
# round_id << 192 | reporters << 128 | their weight (written only when a voter reports one)
missing_reports: uint256[MAX_PROPOSERS]

# --- contribution removal: one proposal at a time; the round bases a removal rewinds to ---
# every round's base, chained: path = keccak256(path_before ++ base) at each opening (one warm slot a
# round, not a fresh one); a removal proves the base it rewinds to against it
path: public(bytes32)
removal_base: bytes32  # the base of round removal_from, proven at the proposal
removal_id: public(uint256)  # the last proposal's id
removal_target: public(address)  # empty: no proposal pending
removal_from: public(uint256)
removal_deadline: public(uint256)  # the last round it may be approved in (or executed after)
removal_approvers: DynArray[address, MAX_APPROVERS]
approved_removal: HashMap[address, uint256]  # the last proposal id each participant approved
removed: public(HashMap[address, bool])  # removed participants never register again
undone: DynArray[uint256, MAX_REMOVALS]  # the round ranges executed removals undid: from << 128 | last

# removed weights during one draw: gone at the end of the transaction
tree_removed: transient(HashMap[uint256, uint256])


@deploy
@payable
def __init__(p: Params, genesis_hash: bytes32):
    assert p.min_stake > 0, "min_stake must be positive"
    assert p.seed_blocks > 0 and p.commit_blocks > 0 and p.candidate_blocks > 0, "phase length 0"
    assert p.vote_commit_blocks > 0 and p.vote_reveal_blocks > 0, "phase length 0"
    assert p.n_proposers > 0 and p.n_proposers <= MAX_PROPOSERS, "n_proposers out of range"
    assert p.n_voters > 0 and p.n_voters <= MAX_VOTERS, "n_voters out of range"
    assert p.slash_rejected_bps <= BPS and p.slash_minority_bps <= BPS, "slash above 100%"
    assert p.slash_no_show_bps <= BPS, "slash above 100%"
    assert p.quorum_bps <= BPS, "quorum above 100%"
    assert p.proposal_bond_bps <= BPS, "bond above 100%"
    assert not p.proposers_vote or p.n_voters + p.n_proposers <= MAX_VOTERS, "too many voting seats"
    assert genesis_hash != empty(bytes32), "empty genesis"
    MIN_STAKE = p.min_stake
    SEED_BLOCKS = p.seed_blocks
    COMMIT_BLOCKS = p.commit_blocks
    CANDIDATE_BLOCKS = p.candidate_blocks
    VOTE_COMMIT_BLOCKS = p.vote_commit_blocks
    VOTE_REVEAL_BLOCKS = p.vote_reveal_blocks
    EXIT_COOLDOWN = p.exit_cooldown
    N_PROPOSERS = p.n_proposers
    N_VOTERS = p.n_voters
    REWARD_PER_ROUND = p.reward_per_round
    SLASH_REJECTED_BPS = p.slash_rejected_bps
    SLASH_MINORITY_BPS = p.slash_minority_bps
    SLASH_NO_SHOW_BPS = p.slash_no_show_bps
    QUORUM_BPS = p.quorum_bps
    PROPOSAL_BOND_BPS = p.proposal_bond_bps
    PROPOSERS_VOTE = p.proposers_vote
    self.global_hash = genesis_hash
    self.reward_pool = msg.value
    log Deployed(genesis_hash=genesis_hash, min_stake=p.min_stake)
    if msg.value > 0:
        log Funded(who=msg.sender, amount=msg.value)


# ---------------------------------------------------------------- Fenwick tree

@internal
@pure
def _lowbit(i: uint256) -> uint256:
    return i & unsafe_sub(0, i)


@internal
@pure
def _at(packed: uint256, rid: uint256) -> uint256:
    """The version of a packed value that the draw of round `rid` reads."""
    if packed >> 192 <= rid:
        return packed & MASK96
    return (packed >> 96) & MASK96


@internal
@view
def _set(packed: uint256, new: uint256) -> uint256:
    """Write `new` as the latest version, counting from the next round (round_id + 1) on."""
    e: uint256 = self.round_id + 1
    if packed >> 192 == e:
        return (packed & ~MASK96) | new
    return (e << 192) | ((packed & MASK96) << 96) | new


@internal
@view
def _prefix(i: uint256, rid: uint256) -> uint256:
    """Sum of the weights of indices 1..i as the draw of round `rid` sees them."""
    s: uint256 = 0
    j: uint256 = i
    for _: uint256 in range(TREE_DEPTH):
        if j == 0:
            break
        s += self._at(self.tree[j], rid)
        j -= self._lowbit(j)
    return s


@internal
def _tree_add(i: uint256, amount: uint256, up: bool):
    n: uint256 = self.n_indices
    j: uint256 = i
    for _: uint256 in range(TREE_DEPTH):
        if j > n:
            break
        t: uint256 = self.tree[j]
        if up:
            self.tree[j] = self._set(t, (t & MASK96) + amount)
        else:
            self.tree[j] = self._set(t, (t & MASK96) - amount)
        j += self._lowbit(j)


@internal
def _sync_weight(who: address, stake: uint256, active: bool):
    """Keep the tree's latest version equal to the stake of every eligible participant (active:
    registered and not exiting); the open round's draw still reads the version before."""
    w: uint256 = 0
    if active and stake >= MIN_STAKE:
        w = stake
    assert w <= MASK96, "stake too large"
    packed: uint256 = self.participants[who].weight
    old: uint256 = packed & MASK96
    if w == old:
        return
    idx: uint256 = self.participants[who].index
    tot: uint256 = self.total_packed
    if w > old:
        self._tree_add(idx, w - old, True)
        self.total_packed = self._set(tot, (tot & MASK96) + (w - old))
    else:
        self._tree_add(idx, old - w, False)
        self.total_packed = self._set(tot, (tot & MASK96) - (old - w))
    el: uint256 = self.eligible_packed
    if old == 0:
        self.eligible_packed = self._set(el, (el & MASK96) + 1)
    elif w == 0:
        self.eligible_packed = self._set(el, (el & MASK96) - 1)
    self.participants[who].weight = self._set(packed, w)


# ---------------------------------------------------------------- participants

@external
@payable
def register(data_size: uint256):
    """Join with msg.value as stake (re-joining after a completed exit keeps the old index) and the
    number of training examples it holds: a commit's claimed sample count (its FedAvg weight) counts
    at most this, and at most CLAIM_CAP times the median of the registered sizes (docs/contract.md);
    0 declares nothing (then only the median cap bounds it)."""
    assert not self.participants[msg.sender].registered, "already registered"
    self._check(not self.removed[msg.sender], "removed from the consortium")
    assert msg.value >= MIN_STAKE, "stake below minimum"
    idx: uint256 = self.participants[msg.sender].index
    if idx == 0:
        idx = self.n_indices + 1
        # a new Fenwick node covers (idx - lowbit(idx), idx]: the older part of its range, in both
        # versions (the open round's and the latest)
        rid: uint256 = self.round_id
        low: uint256 = idx - self._lowbit(idx)
        before: uint256 = self._prefix(idx - 1, rid) - self._prefix(low, rid)
        latest: uint256 = self._prefix(idx - 1, rid + 1) - self._prefix(low, rid + 1)
        self.tree[idx] = ((rid + 1) << 192) | (before << 96) | latest
        self.n_indices = idx
        self.index_owner[idx] = msg.sender
        self.participants[msg.sender].index = idx
    self.participants[msg.sender].registered = True
    self.participants[msg.sender].stake = msg.value
    self.participants[msg.sender].data_size = data_size
    self._sync_weight(msg.sender, msg.value, True)
    log Registered(who=msg.sender, index=idx, stake=msg.value, data_size=data_size)


@external
@payable
def top_up():
    """Add msg.value to the caller's stake."""
    assert self.participants[msg.sender].registered, "not registered"
    assert self.participants[msg.sender].exit_block == 0, "exit announced"
    assert msg.value > 0, "zero amount"
    stake: uint256 = self.participants[msg.sender].stake + msg.value
    self.participants[msg.sender].stake = stake
    self._sync_weight(msg.sender, stake, True)
    log ToppedUp(who=msg.sender, amount=msg.value, stake=stake)


@internal
@view
def _has_open_role(who: address) -> bool:
    r: uint256 = self.participants[who].role >> 32
    s: uint256 = self.state
    return r != 0 and r == self.round_id and s != IDLE and s != DONE


@external
def announce_exit():
    """Stop being drawn; the stake is released after the cooldown."""
    assert self.participants[msg.sender].registered, "not registered"
    assert self.participants[msg.sender].exit_block == 0, "exit announced"
    assert not self._has_open_role(msg.sender), "open role in round"
    eb: uint256 = block.number + EXIT_COOLDOWN
    self.participants[msg.sender].exit_block = eb
    self._sync_weight(msg.sender, 0, False)
    log ExitAnnounced(who=msg.sender, exit_block=eb)


@external
def complete_exit():
    """After the cooldown, move the whole stake to the withdrawable balance."""
    eb: uint256 = self.participants[msg.sender].exit_block
    assert self.participants[msg.sender].registered, "not registered"
    assert eb != 0, "exit not announced"
    assert block.number >= eb, "cooldown not over"
    assert not self._has_open_role(msg.sender), "open role in round"  # drawn from the snapshot
    amount: uint256 = self.participants[msg.sender].stake
    self.participants[msg.sender].stake = 0
    self.participants[msg.sender].balance += amount
    self.participants[msg.sender].exit_block = 0
    self.participants[msg.sender].registered = False
    log ExitCompleted(who=msg.sender, amount=amount)


@external
@nonreentrant
def withdraw(amount: uint256):
    """Pull pattern: pay out rewards and released stake (checks, effects, then interaction)."""
    assert amount > 0, "zero amount"
    assert amount <= self.participants[msg.sender].balance, "amount exceeds balance"
    self.participants[msg.sender].balance -= amount
    log Withdrawn(who=msg.sender, amount=amount)
    ok: bool = raw_call(msg.sender, b"", value=amount, revert_on_failure=False)
    assert ok, "transfer failed"


@external
@payable
def fund():
    """Feed the reward pool."""
    assert msg.value > 0, "zero amount"
    self.reward_pool += msg.value
    log Funded(who=msg.sender, amount=msg.value)


# ---------------------------------------------------------------- contribution removal

@internal
@pure
def _check(ok: bool, reason: String[56]):
    """The removal's checks share one revert: an inline `assert` with a reason costs ~130 bytes of code,
    and the contract is near EIP-170's size limit (docs/contract.md, *Known limits*)."""
    assert ok, reason


@internal
@view
def _removal_support() -> (uint256, uint256):
    """(the approvers' weight, the weight of everyone but the target), both the latest version: stake
    that exited or was slashed below the minimum since approving no longer counts."""
    approve: uint256 = 0
    for a: address in self.removal_approvers:
        approve += self.participants[a].weight & MASK96
    others: uint256 = (self.total_packed & MASK96) - (self.participants[self.removal_target].weight & MASK96)
    return approve, others


@internal
@view
def _live_removal(removal_id: uint256) -> address:
    """The target of proposal `removal_id` if it is the pending one and not expired, else revert."""
    target: address = self.removal_target
    ok: bool = removal_id == self.removal_id and target != empty(address)
    self._check(ok and self.round_id <= self.removal_deadline, "no such live removal proposal")
    return target


@external
def propose_removal(
    target: address, from_round: uint256, path_before: bytes32, bases: DynArray[bytes32, MAX_REWIND]
):
    """Propose to rebuild the global model without `target` from round `from_round` on: once approved
    by more than two thirds of the others' stake, the global hash goes back to the base that round
    opened on and the target is removed (not slashed: a removal is a judgement, not a recomputable
    fault). The rounds after replay the training without it (docs/contract.md, *Removal*). A
    participant may propose its own removal (it leaves with its data's influence); its approval
    never counts. `bases`: the bases of rounds from_round .. round_id, `path_before` the path before
    them: chained, they must give `path` (so bases[0] is round from_round's base)."""
    self._check(self.participants[msg.sender].registered, "not registered")
    known: bool = self.participants[target].index != 0 and not self.removed[target]
    self._check(known, "unknown or removed participant")
    self._check(from_round >= 1 and from_round <= self.round_id, "no such round")
    for u: uint256 in self.undone:  # a round a removal undid is not on the model's path any more
        outside: bool = from_round < u >> 128 or from_round > u & convert(max_value(uint128), uint256)
        self._check(outside, "round undone by a removal")
    self._check(self.removal_target == empty(address) or self.round_id > self.removal_deadline, "removal pending")
    acc: bytes32 = path_before
    for b: bytes32 in bases:
        acc = keccak256(concat(acc, b))
    proven: bool = acc == self.path and len(bases) == self.round_id + 1 - from_round
    self._check(proven, "bases do not prove the round")
    self.removal_base = bases[0]
    rid: uint256 = self.removal_id + 1
    self.removal_id = rid
    self.removal_target = target
    self.removal_from = from_round
    self.removal_deadline = self.round_id + REMOVAL_ROUNDS
    self.removal_approvers = []
    log RemovalProposed(
        removal_id=rid, target=target, from_round=from_round, proposer=msg.sender,
        deadline=self.round_id + REMOVAL_ROUNDS,
    )
    if msg.sender != target:
        self.removal_approvers.append(msg.sender)
        self.approved_removal[msg.sender] = rid
        log RemovalApproved(removal_id=rid, who=msg.sender)


@external
def approve_removal(removal_id: uint256):
    """Approve the pending proposal `removal_id` (the id guards against approving a later one)."""
    self._check(self.participants[msg.sender].registered, "not registered")
    self._check(msg.sender != self._live_removal(removal_id), "the target cannot approve")
    self._check(self.approved_removal[msg.sender] != removal_id, "approved already")
    if len(self.removal_approvers) == MAX_APPROVERS:  # full: drop approvals whose stake has left (worth 0)
        kept: DynArray[address, MAX_APPROVERS] = []
        for a: address in self.removal_approvers:
            if self.participants[a].weight & MASK96 > 0:
                kept.append(a)
        self.removal_approvers = kept
    self.removal_approvers.append(msg.sender)
    self.approved_removal[msg.sender] = removal_id
    log RemovalApproved(removal_id=removal_id, who=msg.sender)


@external
def execute_removal():
    """Anyone, between rounds: carry out the pending proposal once its approvers hold more than two
    thirds of the others' latest weight. The target stops being drawn (its exit starts: its stake is
    released after the cooldown), may never register again, and the global hash becomes the base of
    round `removal_from`: the next round opens on it."""
    target: address = self._live_removal(self.removal_id)
    s: uint256 = self.state
    self._check(s == IDLE or s == DONE, "round in progress")
    approve: uint256 = 0
    others: uint256 = 0
    approve, others = self._removal_support()
    self._check(approve * 3 > others * 2, "not approved by two thirds of the others' stake")
    base: bytes32 = self.removal_base
    self.undone.append((self.removal_from << 128) | self.round_id)
    self.removed[target] = True
    self.removal_target = empty(address)
    if self.participants[target].registered and self.participants[target].exit_block == 0:
        eb: uint256 = block.number + EXIT_COOLDOWN
        self.participants[target].exit_block = eb
        self._sync_weight(target, 0, False)
        log ExitAnnounced(who=target, exit_block=eb)
    self.global_hash = base
    log RemovalExecuted(
        removal_id=self.removal_id, target=target, from_round=self.removal_from, base_hash=base,
        approve_weight=approve, others_weight=others,
    )


# ---------------------------------------------------------------- round: open and draw

@external
def open_round(base_hash: bytes32):
    """Open the next round on the current global model (the genesis is fixed at deployment)."""
    assert self.participants[msg.sender].registered, "not registered"
    s: uint256 = self.state
    assert s == IDLE or s == DONE, "round in progress"
    assert base_hash != empty(bytes32), "empty hash"
    assert base_hash == self.global_hash, "stale global hash"
    if self.removal_target != empty(address):  # an approved removal goes first: no round can delay it
        approve: uint256 = 0
        others: uint256 = 0
        approve, others = self._removal_support()
        lapsed: bool = self.round_id > self.removal_deadline
        self._check(approve * 3 <= others * 2 or lapsed, "approved removal pending")
    rid: uint256 = self.round_id + 1
    self.round_id = rid
    self.path = keccak256(concat(self.path, base_hash))
    self.state = SEEDING
    self.open_block = block.number
    self.seed_acc = 0
    log RoundOpened(round_id=rid, base_hash=base_hash, opener=msg.sender, seed_block=block.number + SEED_BLOCKS)


@external
def commit_seed(round_id: uint256, commitment: bytes32):
    """Optional entropy: keccak256(abi_encode(chain.id, self, round_id, sender, seed)), before the
    seed block (chain and contract bound: a commitment cannot be replayed from another deployment)."""
    assert self.participants[msg.sender].registered, "not registered"
    assert round_id == self.round_id, "wrong round"
    assert self.state == SEEDING and block.number < self.open_block + SEED_BLOCKS, "not in seed commit phase"
    self.seed_commits[msg.sender] = commitment
    log SeedCommitted(round_id=round_id, who=msg.sender, commitment=commitment)


@external
def reveal_seed(round_id: uint256, seed: bytes32, next_commitment: bytes32):
    """Reveal after the seed block's hash is fixed, so no committer knew it in advance.
    `next_commitment` (or empty): the caller's seed commitment for the next round, made here (before
    that round's seed block) so that a steady contributor sends one seed transaction a round, not two."""
    assert round_id == self.round_id, "wrong round"
    sb: uint256 = self.open_block + SEED_BLOCKS
    assert self.state == SEEDING and block.number > sb, "not in seed reveal phase"
    assert block.number <= sb + SEED_BLOCKS, "not in seed reveal phase"
    c: bytes32 = self.seed_commits[msg.sender]
    assert c != empty(bytes32) and c != SEED_USED, "no seed commitment"
    assert keccak256(abi_encode(chain.id, self, round_id, msg.sender, seed)) == c, "reveal does not match"
    self.seed_acc = self.seed_acc ^ convert(seed, uint256)
    log SeedRevealed(round_id=round_id, who=msg.sender, seed=seed)
    if next_commitment == empty(bytes32) or next_commitment == SEED_USED:
        self.seed_commits[msg.sender] = SEED_USED
    else:
        self.seed_commits[msg.sender] = next_commitment
        log SeedCommitted(round_id=round_id + 1, who=msg.sender, commitment=next_commitment)


@internal
@view
def _find(r: uint256, n: uint256, top: uint256, rid: uint256) -> uint256:
    """Smallest index whose prefix weight (minus removed ones) exceeds r: O(log n)."""
    pos: uint256 = 0
    rem: uint256 = r
    step: uint256 = top
    for _: uint256 in range(TREE_DEPTH):
        if step == 0:
            break
        nxt: uint256 = pos + step
        if nxt <= n:
            w: uint256 = self._at(self.tree[nxt], rid) - self.tree_removed[nxt]
            if w <= rem:
                pos = nxt
                rem -= w
        step = step >> 1
    return pos + 1


@internal
def _remove(i: uint256, amount: uint256, n: uint256):
    j: uint256 = i
    for _: uint256 in range(TREE_DEPTH):
        if j > n:
            break
        self.tree_removed[j] += amount
        j += self._lowbit(j)


@external
def draw():
    """Draw proposers then voters, stake-weighted without replacement, from the round seed and the
    stakes as they were when the round opened."""
    assert self.state == SEEDING, "no round to draw"
    sb: uint256 = self.open_block + SEED_BLOCKS
    assert block.number > sb + SEED_BLOCKS, "draw too early"
    rid: uint256 = self.round_id
    eligible: uint256 = self._at(self.eligible_packed, rid)
    if eligible < MIN_ELIGIBLE:
        self.state = DONE
        log RoundFinalized(
            round_id=rid, outcome=CANCELLED, winner=0, global_hash=self.global_hash,
            accept_weight=0, revealed_weight=0,
        )
        return
    bh: bytes32 = empty(bytes32)
    if block.number - sb <= 256:
        bh = blockhash(sb)
    else:
        bh = blockhash(block.number - 1)  # nobody drew in time: weaker, documented
    seed: bytes32 = keccak256(concat(bh, convert(self.seed_acc, bytes32), convert(rid, bytes32)))
    np: uint256 = N_PROPOSERS
    nv: uint256 = N_VOTERS
    need: uint256 = np + nv
    if eligible < need:  # draw everyone eligible; the roles that vote keep their seats first
        need = eligible
        if PROPOSERS_VOTE:  # every role votes: keep the proposers, whose updates train the model
            np = min(N_PROPOSERS, need - 1)
            nv = need - np
        else:  # only the drawn voters vote: keep them, so the vote keeps its weight
            nv = min(N_VOTERS, need - 1)
            np = need - nv
    self.round_shape = (np << 8) | nv
    n: uint256 = self.n_indices
    top: uint256 = 1
    for _: uint256 in range(TREE_DEPTH):
        if top * 2 > n:
            break
        top = top * 2
    remaining: uint256 = self._at(self.total_packed, rid)
    self.draw_total = remaining
    props: DynArray[address, MAX_PROPOSERS] = []
    vots: DynArray[address, MAX_VOTERS] = []
    vw_total: uint256 = 0
    for k: uint256 in range(MAX_ROLES):
        if k == need:
            break
        r: uint256 = convert(keccak256(concat(seed, convert(k, bytes32))), uint256) % remaining
        idx: uint256 = self._find(r, n, top, rid)
        who: address = self.index_owner[idx]
        w: uint256 = self._at(self.participants[who].weight, rid)
        self._remove(idx, w, n)
        remaining -= w
        if k < np:
            self.proposers[k] = who
            props.append(who)
            self.participants[who].role = (rid << 32) | (PROPOSER << 24) | (k << 16)
        else:
            s: uint256 = k - np
            self.voter_slots[s] = (w << 160) | convert(who, uint256)
            vw_total += w
            vots.append(who)
            self.participants[who].role = (rid << 32) | (VOTER << 24) | (s << 16)
    if PROPOSERS_VOTE:  # each proposer also holds the voting seat nv + its slot
        for k: uint256 in range(MAX_PROPOSERS):
            if k == np:
                break
            who: address = props[k]
            w: uint256 = self._at(self.participants[who].weight, rid)
            self.voter_slots[nv + k] = (w << 160) | convert(who, uint256)
            vw_total += w
            vots.append(who)
    self.voter_weight = vw_total
    self.state = DRAWN
    self.draw_block = block.number
    ce: uint256 = block.number + COMMIT_BLOCKS
    log RoundDrawn(
        round_id=rid, seed=seed, proposers=props, voters=vots, commit_end=ce,
        candidate_end=ce + CANDIDATE_BLOCKS, vote_commit_end=ce + CANDIDATE_BLOCKS + VOTE_COMMIT_BLOCKS,
        vote_reveal_end=ce + CANDIDATE_BLOCKS + VOTE_COMMIT_BLOCKS + VOTE_REVEAL_BLOCKS,
    )


# ---------------------------------------------------------------- round: commit, candidate, vote

@internal
@pure
def _tagged(packed: uint256, rid: uint256) -> uint256:
    """The weight in a round-tagged tally slot, 0 if the slot is from an older round."""
    if packed >> 192 != rid:
        return 0
    return packed & convert(max_value(uint192), uint256)


@internal
@view
def _n_candidates(rid: uint256) -> uint256:
    t: uint256 = self.n_cand_tagged
    if t >> 8 != rid:
        return 0
    return t & 255


@external
@view
def tally(k: uint256) -> uint256:
    """Weight revealed for choice k (0 reject, k accept candidate k) in the current round."""
    return self._tagged(self.tallies[k], self.round_id)


@internal
@view
def _n_proposers() -> uint256:
    """The current round's proposer slots (N_PROPOSERS unless the draw had too few eligible)."""
    return self.round_shape >> 8


@internal
@view
def _n_seats() -> uint256:
    """The current round's voting seats: its drawn voters, then (with PROPOSERS_VOTE) its proposers."""
    shape: uint256 = self.round_shape
    return (shape & 255) + ((shape >> 8) if PROPOSERS_VOTE else 0)


@internal
@view
def _proposer_role(who: address, round_id: uint256) -> uint256:
    role: uint256 = self.participants[who].role
    assert (role >> 32) == round_id and ((role >> 24) & 255) == PROPOSER, "not a proposer"
    return role


@internal
@view
def _seat_of(who: address, round_id: uint256) -> (uint256, uint256, uint256):
    """A voter's role word, voting seat and status shift: a drawn voter's status bits are COMMITTED and
    REVEALED; a voting proposer's are VOTE_COMMITTED and VOTE_REVEALED (shift 2), its COMMITTED being
    its update's."""
    role: uint256 = self.participants[who].role
    kind: uint256 = (role >> 24) & 255
    assert (role >> 32) == round_id and (kind == VOTER or (kind == PROPOSER and PROPOSERS_VOTE)), \
        "not a voter"
    if kind == VOTER:
        return role, (role >> 16) & 255, 0
    return role, (self.round_shape & 255) + ((role >> 16) & 255), 2


@internal
@view
def _in_phase(start_offset: uint256, length: uint256) -> bool:
    """Is this block within [draw_block + start_offset, + length) of a drawn round?"""
    start: uint256 = self.draw_block + start_offset
    return self.state == DRAWN and block.number >= start and block.number < start + length


@external
def commit(round_id: uint256, update_hash: bytes32, uri: String[MAX_URI]):
    """A proposer commits sha256(update) and where to fetch it (kept in the event only): one
    commit per proposer."""
    assert round_id == self.round_id, "wrong round"
    assert self._in_phase(0, COMMIT_BLOCKS), "not in commit phase"
    role: uint256 = self._proposer_role(msg.sender, round_id)
    assert (role >> 8) & COMMITTED == 0, "already committed"
    assert update_hash != empty(bytes32), "empty hash"
    self.participants[msg.sender].role = role | (COMMITTED << 8)
    log UpdateCommitted(
        round_id=round_id, who=msg.sender, slot=(role >> 16) & 255, update_hash=update_hash, uri=uri
    )


@external
def post_candidate(round_id: uint256, candidate_hash: bytes32, flagged: uint256, excluded: uint256):
    """Post an aggregate with two bitmasks of proposer slots: `flagged` (evidence of misconduct:
    slashed if this candidate wins) and `excluded` (left out by the aggregator without evidence:
    not rewarded). Voters judge the first candidate that matches their own recomputation. One
    candidate per account and round, none from an exiting account: one account cannot fill the slots."""
    assert self.participants[msg.sender].registered, "not registered"
    assert self.participants[msg.sender].exit_block == 0, "exit announced"
    assert self.posted_round[msg.sender] != round_id, "one candidate per account"
    assert round_id == self.round_id, "wrong round"
    assert self._in_phase(COMMIT_BLOCKS, CANDIDATE_BLOCKS), "not in candidate phase"
    assert candidate_hash != empty(bytes32), "empty hash"
    np: uint256 = self._n_proposers()
    assert flagged >> np == 0, "flag outside proposer slots"
    assert excluded >> np == 0, "exclusion outside proposer slots"
    n: uint256 = self._n_candidates(round_id)
    assert n < MAX_CANDIDATES, "too many candidates"
    for k: uint256 in range(MAX_CANDIDATES):
        if k == n:
            break
        assert self.candidate_hashes[k] != candidate_hash or self.candidate_flags[k] != flagged \
            or self.candidate_excluded[k] != excluded, "duplicate candidate"
    self.posted_round[msg.sender] = round_id
    self.candidate_hashes[n] = candidate_hash
    self.candidate_flags[n] = flagged
    self.candidate_excluded[n] = excluded
    self.n_cand_tagged = (round_id << 8) | (n + 1)
    log CandidatePosted(
        round_id=round_id, who=msg.sender, candidate=n + 1, candidate_hash=candidate_hash, flagged=flagged,
        excluded=excluded
    )


@external
def commit_vote(round_id: uint256, commitment: bytes32):
    """keccak256(abi_encode(chain.id, self, round_id, voter, choice, flags, missing, salt)); choice 0
    rejects, k accepts candidate k (1-based); flags is a bitmask of proposer slots the voter flags
    (recorded, never slashed on: a voter's loss check is private); missing, of the proposer slots whose
    committed blob the voter could not retrieve by the end of the retrieval window."""
    assert round_id == self.round_id, "wrong round"
    assert self._in_phase(COMMIT_BLOCKS + CANDIDATE_BLOCKS, VOTE_COMMIT_BLOCKS), "not in vote commit phase"
    role: uint256 = 0
    seat: uint256 = 0
    bits: uint256 = 0
    role, seat, bits = self._seat_of(msg.sender, round_id)
    assert (role >> (8 + bits)) & COMMITTED == 0, "already committed"
    self.participants[msg.sender].role = role | (COMMITTED << (8 + bits))
    self.vote_commits[seat] = commitment
    log VoteCommitted(round_id=round_id, who=msg.sender, commitment=commitment)


@external
def reveal_vote(round_id: uint256, choice: uint256, flags: uint256, missing: uint256, salt: bytes32):
    """Open the vote; the tallies (and the missing-blob reports) are kept as votes arrive so finalize
    stays bounded."""
    assert round_id == self.round_id, "wrong round"
    assert self._in_phase(COMMIT_BLOCKS + CANDIDATE_BLOCKS + VOTE_COMMIT_BLOCKS, VOTE_REVEAL_BLOCKS), \
        "not in vote reveal phase"
    role: uint256 = 0
    slot: uint256 = 0
    bits: uint256 = 0
    role, slot, bits = self._seat_of(msg.sender, round_id)
    status: uint256 = (role >> (8 + bits)) & 255
    assert status & COMMITTED != 0, "no vote commitment"
    assert status & REVEALED == 0, "already revealed"
    c: bytes32 = keccak256(abi_encode(chain.id, self, round_id, msg.sender, choice, flags, missing, salt))
    assert c == self.vote_commits[slot], "reveal does not match"
    assert choice <= self._n_candidates(round_id), "no such candidate"
    np: uint256 = self._n_proposers()
    assert flags >> np == 0, "flag outside proposer slots"
    assert missing >> np == 0, "missing outside proposer slots"
    w: uint256 = self.voter_slots[slot] >> 160
    self.participants[msg.sender].role = role | (REVEALED << (8 + bits)) | choice
    self.tallies[choice] = (round_id << 192) | (self._tagged(self.tallies[choice], round_id) + w)
    if missing != 0:
        for i: uint256 in range(MAX_PROPOSERS):
            if i == np:
                break
            if (missing >> i) & 1 == 1:
                self.missing_reports[i] = (round_id << 192) | (
                    self._tagged(self.missing_reports[i], round_id) + (1 << 128) + w
                )
    log VoteRevealed(round_id=round_id, who=msg.sender, choice=choice, flags=flags, missing=missing, weight=w)


# ---------------------------------------------------------------- round: finalize

@internal
def _slash(rid: uint256, who: address, bps: uint256, reason: uint256) -> uint256:
    """Role holders are registered (complete_exit is refused while a role is open) but may have
    announced their exit after the round opened: they stay out of the tree."""
    stake: uint256 = self.participants[who].stake
    amount: uint256 = stake * bps // BPS
    if amount == 0:
        return 0
    self.participants[who].stake = stake - amount
    self._sync_weight(who, stake - amount, self.participants[who].exit_block == 0)
    log Slashed(round_id=rid, who=who, amount=amount, reason=reason)
    return amount


@internal
@view
def _revealed(rid: uint256, nc: uint256) -> uint256:
    """Weight of all revealed votes: each one counts in exactly one tally entry."""
    total: uint256 = 0
    for k: uint256 in range(MAX_CANDIDATES + 1):
        if k > nc:
            break
        total += self._tagged(self.tallies[k], rid)
    return total


@internal
@view
def _jointly_missing(slot: uint256, rid: uint256, revealed: uint256) -> bool:
    """Availability is decided by more than one party: at least MIN_MISSING_REPORTS revealed voters,
    holding more than half of the revealed weight, report the slot's blob missing after the window."""
    r: uint256 = self._tagged(self.missing_reports[slot], rid)
    return r >> 128 >= MIN_MISSING_REPORTS and (r & convert(max_value(uint128), uint256)) * 2 > revealed


@external
def finalize():
    """Anyone, after the reveal deadline: tally, move the global hash, reward and slash.
    A candidate wins with a strict majority of the revealed weight that is also more than a third of
    the weight in the round's draw: honest voters vote only for the candidate they recompute, so a
    coalition holding less than a third of the stake cannot carry another one alone.
    Slashes rest only on what anyone can recompute: a proposer that committed nothing, one the winning
    (recomputed) candidate flags, the proposal bond of one it excludes (a robust rule's or a probe's
    public verdict: the bond, not a slash, because such verdicts have false positives), a voter that voted for another candidate than the winner, a voter
    that did not reveal (at no less than the minority slash: withholding must not pay), and (the 10%
    slash) an update the winner left out whose blob the revealed voters jointly report missing
    (`_jointly_missing`: one party's claim alone only leaves it out). A voter's own flags and a
    rejection are private judgements: never slashed.
    Bounded by the round's proposers + seats <= MAX_ROLES and MAX_CANDIDATES."""
    assert self.state == DRAWN, "no round to finalize"
    assert block.number >= self.draw_block + COMMIT_BLOCKS + CANDIDATE_BLOCKS + VOTE_COMMIT_BLOCKS \
        + VOTE_REVEAL_BLOCKS, "too early"
    rid: uint256 = self.round_id
    nc: uint256 = self._n_candidates(rid)
    revealed: uint256 = self._revealed(rid, nc)
    outcome: uint256 = REJECTED
    winner: uint256 = 0
    quorum: bool = revealed > 0 and revealed * BPS >= QUORUM_BPS * self.voter_weight
    if not quorum:
        outcome = NO_QUORUM
    else:
        for k: uint256 in range(1, MAX_CANDIDATES + 1):
            if k > nc:
                break
            t: uint256 = self._tagged(self.tallies[k], rid)
            if t * 2 > revealed and t * 3 > self.draw_total:
                winner = k
        if winner > 0:
            outcome = ACCEPTED
            self.global_hash = self.candidate_hashes[winner - 1]
    winner_flags: uint256 = 0
    winner_excluded: uint256 = 0
    if winner > 0:
        winner_flags = self.candidate_flags[winner - 1]
        winner_excluded = self.candidate_excluded[winner - 1]

    slashed: uint256 = 0
    rewarded: DynArray[address, MAX_ROLES] = []
    np: uint256 = self._n_proposers()
    n_seats: uint256 = self._n_seats()
    n_drawn_voters: uint256 = self.round_shape & 255
    for i: uint256 in range(MAX_PROPOSERS):
        if i == np:
            break
        who: address = self.proposers[i]
        status: uint256 = (self.participants[who].role >> 8) & 255
        if status & COMMITTED == 0:
            slashed += self._slash(rid, who, SLASH_NO_SHOW_BPS, SLASH_NO_SHOW)
        elif (winner_flags >> i) & 1 == 1:
            slashed += self._slash(rid, who, SLASH_REJECTED_BPS, SLASH_REJECTED)
        elif winner > 0:
            if (winner_excluded >> i) & 1 == 0:
                rewarded.append(who)
            elif self._jointly_missing(i, rid, revealed):  # unavailable by the parties' joint reports
                slashed += self._slash(rid, who, SLASH_REJECTED_BPS, SLASH_UNAVAILABLE)
            else:  # proposing costs a bond that only inclusion returns: an always-excluded update loses
                slashed += self._slash(rid, who, PROPOSAL_BOND_BPS, SLASH_EXCLUDED)
    withheld_bps: uint256 = max(SLASH_NO_SHOW_BPS, SLASH_MINORITY_BPS)
    for i: uint256 in range(MAX_VOTERS):
        if i == n_seats:
            break
        who: address = convert(self.voter_slots[i] & convert(max_value(uint160), uint256), address)
        role: uint256 = self.participants[who].role
        revealed_bit: uint256 = REVEALED if i < n_drawn_voters else VOTE_REVEALED
        if (role >> 8) & revealed_bit == 0:
            slashed += self._slash(rid, who, withheld_bps, SLASH_NO_SHOW)
        elif winner > 0:
            choice: uint256 = role & 255
            if choice == winner:
                rewarded.append(who)
            elif choice != 0:
                slashed += self._slash(rid, who, SLASH_MINORITY_BPS, SLASH_MINORITY)

    pool: uint256 = self.reward_pool + slashed
    n_rewarded: uint256 = len(rewarded)
    if n_rewarded > 0:
        share: uint256 = min(REWARD_PER_ROUND, pool) // n_rewarded
        if share > 0:
            for who: address in rewarded:
                self.participants[who].balance += share
                log Rewarded(round_id=rid, who=who, amount=share)
            pool -= share * n_rewarded
    self.reward_pool = pool
    self.state = DONE
    log RoundFinalized(
        round_id=rid, outcome=outcome, winner=winner, global_hash=self.global_hash,
        accept_weight=self._tagged(self.tallies[winner], rid) if winner > 0 else 0,
        revealed_weight=revealed,
    )


# ---------------------------------------------------------------- views

@external
@view
def params() -> Params:
    return Params(
        min_stake=MIN_STAKE, seed_blocks=SEED_BLOCKS, commit_blocks=COMMIT_BLOCKS,
        candidate_blocks=CANDIDATE_BLOCKS, vote_commit_blocks=VOTE_COMMIT_BLOCKS,
        vote_reveal_blocks=VOTE_REVEAL_BLOCKS, exit_cooldown=EXIT_COOLDOWN, n_proposers=N_PROPOSERS,
        n_voters=N_VOTERS, reward_per_round=REWARD_PER_ROUND, slash_rejected_bps=SLASH_REJECTED_BPS,
        slash_minority_bps=SLASH_MINORITY_BPS, slash_no_show_bps=SLASH_NO_SHOW_BPS, quorum_bps=QUORUM_BPS,
        proposal_bond_bps=PROPOSAL_BOND_BPS, proposers_vote=PROPOSERS_VOTE,
    )


@external
@view
def round_info() -> RoundInfo:
    """The current round; deadlines are 0 until the draw."""
    st: uint256 = self.state
    drawn: bool = st == DRAWN or (st == DONE and self.draw_block > self.open_block)
    db: uint256 = 0
    np: uint256 = 0
    nv: uint256 = 0
    if drawn:
        db = self.draw_block
        np = self._n_proposers()
        nv = self._n_seats()
    ce: uint256 = db + COMMIT_BLOCKS if drawn else 0
    cae: uint256 = ce + CANDIDATE_BLOCKS if drawn else 0
    vce: uint256 = cae + VOTE_COMMIT_BLOCKS if drawn else 0
    vre: uint256 = vce + VOTE_REVEAL_BLOCKS if drawn else 0
    rid: uint256 = self.round_id
    nc: uint256 = self._n_candidates(rid) if drawn else 0
    return RoundInfo(
        round_id=rid, state=st if st != DONE else IDLE, base_hash=self.global_hash,
        open_block=self.open_block, seed_block=self.open_block + SEED_BLOCKS if rid > 0 else 0,
        draw_block=db, commit_end=ce, candidate_end=cae, vote_commit_end=vce, vote_reveal_end=vre,
        n_proposers=np, n_voters=nv, n_candidates=nc,
        voter_weight=self.voter_weight if drawn else 0, revealed_weight=self._revealed(rid, nc) if drawn else 0,
    )


@external
@view
def roles() -> (DynArray[address, MAX_PROPOSERS], DynArray[address, MAX_VOTERS]):
    """The current round's proposers and voting seats in slot order (empty before the draw)."""
    props: DynArray[address, MAX_PROPOSERS] = []
    vots: DynArray[address, MAX_VOTERS] = []
    if self.state != DRAWN:
        return props, vots
    np: uint256 = self._n_proposers()
    n_seats: uint256 = self._n_seats()
    for i: uint256 in range(MAX_PROPOSERS):
        if i == np:
            break
        props.append(self.proposers[i])
    for i: uint256 in range(MAX_VOTERS):
        if i == n_seats:
            break
        vots.append(convert(self.voter_slots[i] & convert(max_value(uint160), uint256), address))
    return props, vots


@external
@view
def participant_list(start: uint256, count: uint256) -> DynArray[address, 256]:
    """Addresses by participant index, from `start` (1-based), at most 256 per call."""
    out: DynArray[address, 256] = []
    n: uint256 = self.n_indices
    for i: uint256 in range(256):
        if i == count or start + i > n:
            break
        out.append(self.index_owner[start + i])
    return out


@external
@view
def participant_states(start: uint256, count: uint256) -> DynArray[Participant, 128]:
    """Participants by index from `start` (1-based), at most 128 per call: one read for a
    dashboard or an audit instead of one per address."""
    out: DynArray[Participant, 128] = []
    n: uint256 = self.n_indices
    for i: uint256 in range(128):
        if i == count or start + i > n:
            break
        out.append(self.participants[self.index_owner[start + i]])
    return out


@external
@view
def weight_of_prefix(i: uint256) -> uint256:
    """Sum of the latest weights of indices 1..i (lets tests check the tree against the stakes)."""
    return self._prefix(i, self.round_id + 1)


@external
@view
def total_weight() -> uint256:
    """Sum of the latest weights: what the next round's draw reads."""
    return self.total_packed & MASK96


@external
@view
def eligible() -> uint256:
    """Participants with a positive latest weight."""
    return self.eligible_packed & MASK96


@external
@view
def draw_weight() -> uint256:
    """Total weight in the current round's draw (0 before the first draw)."""
    return self.draw_total
