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

# round states
IDLE: constant(uint256) = 0  # no round open (none yet, or the last one is finalized)
SEEDING: constant(uint256) = 1  # open: seed commit / reveal, roles not drawn yet
DRAWN: constant(uint256) = 2  # roles drawn: commit, candidate, vote commit, vote reveal

# role kinds, packed into Participant.role
PROPOSER: constant(uint256) = 1
VOTER: constant(uint256) = 2
# role status bits
COMMITTED: constant(uint256) = 1
REVEALED: constant(uint256) = 2

# outcomes
REJECTED: constant(uint256) = 0
ACCEPTED: constant(uint256) = 1
NO_QUORUM: constant(uint256) = 2
CANCELLED: constant(uint256) = 3

# slash reasons
SLASH_REJECTED: constant(uint256) = 1
SLASH_MINORITY: constant(uint256) = 2
SLASH_NO_SHOW: constant(uint256) = 3


struct Participant:
    stake: uint256
    balance: uint256
    index: uint256  # 1-based position in the Fenwick tree; 0 = never registered
    weight: uint256  # what the tree holds for this participant (stake if eligible, else 0)
    exit_block: uint256  # 0 = not exiting; else complete_exit is allowed from this block
    registered: bool
    role: uint256  # round << 32 | kind << 24 | slot << 16 | status << 8 | choice


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
    seed: bytes32
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

event VoteCommitted:
    round_id: indexed(uint256)
    who: indexed(address)
    commitment: bytes32

event VoteRevealed:
    round_id: indexed(uint256)
    who: indexed(address)
    choice: uint256
    flags: uint256
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


# --- parameters (fixed at deployment) ---
params: public(Params)

# --- participants ---
participants: public(HashMap[address, Participant])
index_owner: public(HashMap[uint256, address])
n_indices: public(uint256)
tree: HashMap[uint256, uint256]  # Fenwick tree of weights by participant index
total_weight: public(uint256)
eligible: public(uint256)  # participants with a positive weight
reward_pool: public(uint256)
global_hash: public(bytes32)

# --- the current round (slots reused from round to round: history lives in the events) ---
round_id: public(uint256)
state: uint256
base_hash: bytes32
open_block: uint256
seed_block: uint256
draw_block: uint256
commit_end: uint256
candidate_end: uint256
vote_commit_end: uint256
vote_reveal_end: uint256
seed_acc: uint256
seed: bytes32
seed_commits: HashMap[address, bytes32]
proposers: public(address[MAX_PROPOSERS])
n_proposers: uint256
update_hashes: public(bytes32[MAX_PROPOSERS])
voters: public(address[MAX_VOTERS])
n_voters: uint256
voter_weights: public(uint256[MAX_VOTERS])
vote_commits: public(bytes32[MAX_VOTERS])
voter_weight: uint256
revealed_weight: uint256
candidate_hashes: public(bytes32[MAX_CANDIDATES])
candidate_flags: public(uint256[MAX_CANDIDATES])
n_candidates: uint256
# tallies keyed by round so no reset is needed: [round][0] reject, [round][k] accept candidate k
tally: public(HashMap[uint256, HashMap[uint256, uint256]])
flag_weight: public(HashMap[uint256, HashMap[uint256, uint256]])

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
    self.params = p
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
@view
def _prefix(i: uint256) -> uint256:
    s: uint256 = 0
    j: uint256 = i
    for _: uint256 in range(TREE_DEPTH):
        if j == 0:
            break
        s += self.tree[j]
        j -= self._lowbit(j)
    return s


@internal
def _tree_add(i: uint256, amount: uint256):
    n: uint256 = self.n_indices
    j: uint256 = i
    for _: uint256 in range(TREE_DEPTH):
        if j > n:
            break
        self.tree[j] += amount
        j += self._lowbit(j)


@internal
def _tree_sub(i: uint256, amount: uint256):
    n: uint256 = self.n_indices
    j: uint256 = i
    for _: uint256 in range(TREE_DEPTH):
        if j > n:
            break
        self.tree[j] -= amount
        j += self._lowbit(j)


@internal
def _sync_weight(who: address):
    """Keep the tree equal to the stake of every eligible participant."""
    p: Participant = self.participants[who]
    w: uint256 = 0
    if p.registered and p.exit_block == 0 and p.stake >= self.params.min_stake:
        w = p.stake
    if w == p.weight:
        return
    if w > p.weight:
        self._tree_add(p.index, w - p.weight)
        self.total_weight += w - p.weight
    else:
        self._tree_sub(p.index, p.weight - w)
        self.total_weight -= p.weight - w
    if p.weight == 0:
        self.eligible += 1
    elif w == 0:
        self.eligible -= 1
    self.participants[who].weight = w


# ---------------------------------------------------------------- participants

@external
@payable
def register():
    """Join with msg.value as stake (re-joining after a completed exit keeps the old index)."""
    assert not self.participants[msg.sender].registered, "already registered"
    assert msg.value >= self.params.min_stake, "stake below minimum"
    idx: uint256 = self.participants[msg.sender].index
    if idx == 0:
        idx = self.n_indices + 1
        # a new Fenwick node covers (idx - lowbit(idx), idx]: the older part of its range
        node: uint256 = self._prefix(idx - 1) - self._prefix(idx - self._lowbit(idx))
        self.tree[idx] = node
        self.n_indices = idx
        self.index_owner[idx] = msg.sender
        self.participants[msg.sender].index = idx
    self.participants[msg.sender].registered = True
    self.participants[msg.sender].stake = msg.value
    self._sync_weight(msg.sender)
    log Registered(who=msg.sender, index=idx, stake=msg.value)


@external
@payable
def top_up():
    """Add msg.value to the caller's stake."""
    assert self.participants[msg.sender].registered, "not registered"
    assert self.participants[msg.sender].exit_block == 0, "exit announced"
    assert msg.value > 0, "zero amount"
    self.participants[msg.sender].stake += msg.value
    self._sync_weight(msg.sender)
    log ToppedUp(who=msg.sender, amount=msg.value, stake=self.participants[msg.sender].stake)


@internal
@view
def _has_open_role(who: address) -> bool:
    r: uint256 = self.participants[who].role >> 32
    return r != 0 and r == self.round_id and self.state != IDLE


@external
def announce_exit():
    """Stop being drawn; the stake is released after the cooldown."""
    assert self.participants[msg.sender].registered, "not registered"
    assert self.participants[msg.sender].exit_block == 0, "exit announced"
    assert not self._has_open_role(msg.sender), "open role in round"
    eb: uint256 = block.number + self.params.exit_cooldown
    self.participants[msg.sender].exit_block = eb
    self._sync_weight(msg.sender)
    log ExitAnnounced(who=msg.sender, exit_block=eb)


@external
def complete_exit():
    """After the cooldown, move the whole stake to the withdrawable balance."""
    eb: uint256 = self.participants[msg.sender].exit_block
    assert self.participants[msg.sender].registered, "not registered"
    assert eb != 0, "exit not announced"
    assert block.number >= eb, "cooldown not over"
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


# ---------------------------------------------------------------- round: open and draw

@external
def open_round(base_hash: bytes32):
    """Open the next round on the current global model (the first call may set the genesis)."""
    assert self.participants[msg.sender].registered, "not registered"
    assert self.state == IDLE, "round in progress"
    assert base_hash != empty(bytes32), "empty hash"
    if self.global_hash == empty(bytes32):
        self.global_hash = base_hash
    assert base_hash == self.global_hash, "stale global hash"
    rid: uint256 = self.round_id + 1
    self.round_id = rid
    self.state = SEEDING
    self.base_hash = base_hash
    self.open_block = block.number
    sb: uint256 = block.number + self.params.seed_blocks
    self.seed_block = sb
    self.seed_acc = 0
    log RoundOpened(round_id=rid, base_hash=base_hash, opener=msg.sender, seed_block=sb)


@external
def commit_seed(round_id: uint256, commitment: bytes32):
    """Optional entropy: keccak256(abi_encode(round_id, sender, seed)), before the seed block."""
    assert self.participants[msg.sender].registered, "not registered"
    assert round_id == self.round_id, "wrong round"
    assert self.state == SEEDING and block.number < self.seed_block, "not in seed commit phase"
    self.seed_commits[msg.sender] = commitment
    log SeedCommitted(round_id=round_id, who=msg.sender, commitment=commitment)


@external
def reveal_seed(round_id: uint256, seed: bytes32):
    """Reveal after the seed block's hash is fixed, so no committer knew it in advance."""
    assert round_id == self.round_id, "wrong round"
    sb: uint256 = self.seed_block
    assert self.state == SEEDING and block.number > sb, "not in seed reveal phase"
    assert block.number <= sb + self.params.seed_blocks, "not in seed reveal phase"
    c: bytes32 = self.seed_commits[msg.sender]
    assert c != empty(bytes32), "no seed commitment"
    assert keccak256(abi_encode(round_id, msg.sender, seed)) == c, "reveal does not match"
    self.seed_commits[msg.sender] = empty(bytes32)
    self.seed_acc = self.seed_acc ^ convert(seed, uint256)
    log SeedRevealed(round_id=round_id, who=msg.sender, seed=seed)


@internal
@view
def _find(r: uint256, n: uint256, top: uint256) -> uint256:
    """Smallest index whose prefix weight (minus removed ones) exceeds r: O(log n)."""
    pos: uint256 = 0
    rem: uint256 = r
    step: uint256 = top
    for _: uint256 in range(TREE_DEPTH):
        if step == 0:
            break
        nxt: uint256 = pos + step
        if nxt <= n:
            w: uint256 = self.tree[nxt] - self.tree_removed[nxt]
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


@internal
def _cancel(rid: uint256):
    self.state = IDLE
    log RoundFinalized(
        round_id=rid, outcome=CANCELLED, winner=0, global_hash=self.global_hash,
        accept_weight=0, revealed_weight=0,
    )


@external
def draw():
    """Draw proposers then voters, stake-weighted without replacement, from the round seed."""
    assert self.state == SEEDING, "no round to draw"
    sb: uint256 = self.seed_block
    assert block.number > sb + self.params.seed_blocks, "draw too early"
    rid: uint256 = self.round_id
    np: uint256 = self.params.n_proposers
    nv: uint256 = self.params.n_voters
    if self.eligible < np + nv:
        self._cancel(rid)
        return
    bh: bytes32 = empty(bytes32)
    if block.number - sb <= 256:
        bh = blockhash(sb)
    else:
        bh = blockhash(block.number - 1)  # nobody drew in time: weaker, documented
    seed: bytes32 = keccak256(concat(bh, convert(self.seed_acc, bytes32), convert(rid, bytes32)))
    self.seed = seed
    n: uint256 = self.n_indices
    top: uint256 = 1
    for _: uint256 in range(TREE_DEPTH):
        if top * 2 > n:
            break
        top = top * 2
    remaining: uint256 = self.total_weight
    props: DynArray[address, MAX_PROPOSERS] = []
    vots: DynArray[address, MAX_VOTERS] = []
    vw_total: uint256 = 0
    for k: uint256 in range(MAX_ROLES):
        if k == np + nv:
            break
        r: uint256 = convert(keccak256(concat(seed, convert(k, bytes32))), uint256) % remaining
        idx: uint256 = self._find(r, n, top)
        who: address = self.index_owner[idx]
        w: uint256 = self.participants[who].weight
        self._remove(idx, w, n)
        remaining -= w
        if k < np:
            self.proposers[k] = who
            props.append(who)
            self.participants[who].role = (rid << 32) | (PROPOSER << 24) | (k << 16)
        else:
            s: uint256 = k - np
            self.voters[s] = who
            self.voter_weights[s] = w
            vw_total += w
            vots.append(who)
            self.participants[who].role = (rid << 32) | (VOTER << 24) | (s << 16)
    self.n_proposers = np
    self.n_voters = nv
    self.voter_weight = vw_total
    self.revealed_weight = 0
    self.n_candidates = 0
    self.state = DRAWN
    self.draw_block = block.number
    ce: uint256 = block.number + self.params.commit_blocks
    cae: uint256 = ce + self.params.candidate_blocks
    vce: uint256 = cae + self.params.vote_commit_blocks
    vre: uint256 = vce + self.params.vote_reveal_blocks
    self.commit_end = ce
    self.candidate_end = cae
    self.vote_commit_end = vce
    self.vote_reveal_end = vre
    log RoundDrawn(
        round_id=rid, seed=seed, proposers=props, voters=vots, commit_end=ce,
        candidate_end=cae, vote_commit_end=vce, vote_reveal_end=vre,
    )


# ---------------------------------------------------------------- round: commit, candidate, vote

@internal
@view
def _role_of(who: address, round_id: uint256, kind: uint256) -> uint256:
    role: uint256 = self.participants[who].role
    ok: bool = (role >> 32) == round_id and ((role >> 24) & 255) == kind
    if kind == PROPOSER:
        assert ok, "not a proposer"
    else:
        assert ok, "not a voter"
    return role


@external
def commit(round_id: uint256, update_hash: bytes32, uri: String[MAX_URI]):
    """A proposer commits sha256(update) and where to fetch it: one commit per proposer."""
    assert round_id == self.round_id, "wrong round"
    assert self.state == DRAWN and block.number < self.commit_end, "not in commit phase"
    role: uint256 = self._role_of(msg.sender, round_id, PROPOSER)
    assert (role >> 8) & COMMITTED == 0, "already committed"
    assert update_hash != empty(bytes32), "empty hash"
    slot: uint256 = (role >> 16) & 255
    self.participants[msg.sender].role = role | (COMMITTED << 8)
    self.update_hashes[slot] = update_hash
    log UpdateCommitted(round_id=round_id, who=msg.sender, slot=slot, update_hash=update_hash, uri=uri)


@external
def post_candidate(round_id: uint256, candidate_hash: bytes32, flagged: uint256):
    """Post an aggregate and the bitmask of flagged proposer slots; voters judge the first
    candidate that matches their own recomputation."""
    assert self.participants[msg.sender].registered, "not registered"
    assert round_id == self.round_id, "wrong round"
    assert self.state == DRAWN, "not in candidate phase"
    assert block.number >= self.commit_end and block.number < self.candidate_end, "not in candidate phase"
    assert candidate_hash != empty(bytes32), "empty hash"
    assert flagged >> self.n_proposers == 0, "flag outside proposer slots"
    n: uint256 = self.n_candidates
    assert n < MAX_CANDIDATES, "too many candidates"
    for k: uint256 in range(MAX_CANDIDATES):
        if k == n:
            break
        assert self.candidate_hashes[k] != candidate_hash or self.candidate_flags[k] != flagged, \
            "duplicate candidate"
    self.candidate_hashes[n] = candidate_hash
    self.candidate_flags[n] = flagged
    self.n_candidates = n + 1
    log CandidatePosted(
        round_id=round_id, who=msg.sender, candidate=n + 1, candidate_hash=candidate_hash, flagged=flagged
    )


@external
def commit_vote(round_id: uint256, commitment: bytes32):
    """keccak256(abi_encode(round_id, voter, choice, flags, salt)); choice 0 rejects, k accepts
    candidate k (1-based); flags is a bitmask of proposer slots the voter flags."""
    assert round_id == self.round_id, "wrong round"
    assert self.state == DRAWN, "not in vote commit phase"
    assert block.number >= self.candidate_end and block.number < self.vote_commit_end, \
        "not in vote commit phase"
    role: uint256 = self._role_of(msg.sender, round_id, VOTER)
    assert (role >> 8) & COMMITTED == 0, "already committed"
    self.participants[msg.sender].role = role | (COMMITTED << 8)
    self.vote_commits[(role >> 16) & 255] = commitment
    log VoteCommitted(round_id=round_id, who=msg.sender, commitment=commitment)


@external
def reveal_vote(round_id: uint256, choice: uint256, flags: uint256, salt: bytes32):
    """Open the vote; the tallies are kept as votes arrive so finalize stays bounded."""
    assert round_id == self.round_id, "wrong round"
    assert self.state == DRAWN, "not in vote reveal phase"
    assert block.number >= self.vote_commit_end and block.number < self.vote_reveal_end, \
        "not in vote reveal phase"
    role: uint256 = self._role_of(msg.sender, round_id, VOTER)
    status: uint256 = (role >> 8) & 255
    assert status & COMMITTED != 0, "no vote commitment"
    assert status & REVEALED == 0, "already revealed"
    slot: uint256 = (role >> 16) & 255
    c: bytes32 = keccak256(abi_encode(round_id, msg.sender, choice, flags, salt))
    assert c == self.vote_commits[slot], "reveal does not match"
    assert choice <= self.n_candidates, "no such candidate"
    assert flags >> self.n_proposers == 0, "flag outside proposer slots"
    w: uint256 = self.voter_weights[slot]
    self.participants[msg.sender].role = role | (REVEALED << 8) | choice
    self.revealed_weight += w
    self.tally[round_id][choice] += w
    f: uint256 = flags
    for i: uint256 in range(MAX_PROPOSERS):
        if f == 0:
            break
        if f & 1 == 1:
            self.flag_weight[round_id][i] += w
        f = f >> 1
    log VoteRevealed(round_id=round_id, who=msg.sender, choice=choice, flags=flags, weight=w)


# ---------------------------------------------------------------- round: finalize

@internal
def _slash(rid: uint256, who: address, bps: uint256, reason: uint256) -> uint256:
    amount: uint256 = self.participants[who].stake * bps // BPS
    if amount == 0:
        return 0
    self.participants[who].stake -= amount
    self._sync_weight(who)
    log Slashed(round_id=rid, who=who, amount=amount, reason=reason)
    return amount


@external
def finalize():
    """Anyone, after the reveal deadline: tally, move the global hash, reward and slash.
    Bounded by n_proposers + n_voters <= MAX_ROLES and MAX_CANDIDATES."""
    assert self.state == DRAWN, "no round to finalize"
    assert block.number >= self.vote_reveal_end, "too early"
    rid: uint256 = self.round_id
    revealed: uint256 = self.revealed_weight
    outcome: uint256 = REJECTED
    winner: uint256 = 0
    majority: uint256 = 0  # choice of the strict-majority side, if any (valid when has_majority)
    has_majority: bool = False
    quorum: bool = revealed * BPS >= self.params.quorum_bps * self.voter_weight and revealed > 0
    if not quorum:
        outcome = NO_QUORUM
    else:
        nc: uint256 = self.n_candidates
        for k: uint256 in range(MAX_CANDIDATES + 1):
            if k > nc:
                break
            if self.tally[rid][k] * 2 > revealed:
                majority = k
                has_majority = True
        if has_majority and majority > 0:
            outcome = ACCEPTED
            winner = majority
            self.global_hash = self.candidate_hashes[majority - 1]
    winner_flags: uint256 = 0
    if winner > 0:
        winner_flags = self.candidate_flags[winner - 1]

    slashed: uint256 = 0
    rewarded: DynArray[address, MAX_ROLES] = []
    np: uint256 = self.n_proposers
    for i: uint256 in range(MAX_PROPOSERS):
        if i == np:
            break
        who: address = self.proposers[i]
        status: uint256 = (self.participants[who].role >> 8) & 255
        if status & COMMITTED == 0:
            slashed += self._slash(rid, who, self.params.slash_no_show_bps, SLASH_NO_SHOW)
        elif (winner_flags >> i) & 1 == 1 or (quorum and self.flag_weight[rid][i] * 2 > revealed):
            slashed += self._slash(rid, who, self.params.slash_rejected_bps, SLASH_REJECTED)
        elif outcome == ACCEPTED:
            rewarded.append(who)
    nv: uint256 = self.n_voters
    for i: uint256 in range(MAX_VOTERS):
        if i == nv:
            break
        who: address = self.voters[i]
        role: uint256 = self.participants[who].role
        if (role >> 8) & REVEALED == 0:
            slashed += self._slash(rid, who, self.params.slash_no_show_bps, SLASH_NO_SHOW)
        elif has_majority:
            if role & 255 == majority:
                rewarded.append(who)
            else:
                slashed += self._slash(rid, who, self.params.slash_minority_bps, SLASH_MINORITY)

    pool: uint256 = self.reward_pool + slashed
    n_rewarded: uint256 = len(rewarded)
    if n_rewarded > 0:
        share: uint256 = min(self.params.reward_per_round, pool) // n_rewarded
        if share > 0:
            for who: address in rewarded:
                self.participants[who].balance += share
                log Rewarded(round_id=rid, who=who, amount=share)
            pool -= share * n_rewarded
    self.reward_pool = pool
    self.state = IDLE
    log RoundFinalized(
        round_id=rid, outcome=outcome, winner=winner, global_hash=self.global_hash,
        accept_weight=self.tally[rid][winner] if winner > 0 else 0, revealed_weight=revealed,
    )


# ---------------------------------------------------------------- views

@external
@view
def round_info() -> RoundInfo:
    return RoundInfo(
        round_id=self.round_id, state=self.state, base_hash=self.base_hash,
        open_block=self.open_block, seed_block=self.seed_block, draw_block=self.draw_block,
        commit_end=self.commit_end, candidate_end=self.candidate_end,
        vote_commit_end=self.vote_commit_end, vote_reveal_end=self.vote_reveal_end,
        seed=self.seed, n_proposers=self.n_proposers, n_voters=self.n_voters,
        n_candidates=self.n_candidates, voter_weight=self.voter_weight,
        revealed_weight=self.revealed_weight,
    )


@external
@view
def weight_of_prefix(i: uint256) -> uint256:
    """Sum of weights of indices 1..i (lets tests check the tree against the stakes)."""
    return self._prefix(i)


@external
@view
def roles() -> (DynArray[address, MAX_PROPOSERS], DynArray[address, MAX_VOTERS]):
    """The current round's proposers and voters, in slot order."""
    props: DynArray[address, MAX_PROPOSERS] = []
    vots: DynArray[address, MAX_VOTERS] = []
    np: uint256 = self.n_proposers
    nv: uint256 = self.n_voters
    if self.state == SEEDING:
        np = 0
        nv = 0
    for i: uint256 in range(MAX_PROPOSERS):
        if i == np:
            break
        props.append(self.proposers[i])
    for i: uint256 in range(MAX_VOTERS):
        if i == nv:
            break
        vots.append(self.voters[i])
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
