#pragma version 0.4.3
#pragma evm-version cancun
"""A participant contract whose receive hook calls withdraw again (reentrancy test)."""

interface Consortium:
    def register(data_size: uint256): payable
    def announce_exit(): nonpayable
    def complete_exit(): nonpayable
    def withdraw(amount: uint256): nonpayable

target: public(Consortium)
swallow: public(bool)  # True: ignore the failed re-entry; False: let its revert propagate
reentered: public(uint256)
reentry_ok: public(bool)
amount: uint256


@deploy
def __init__(target: address, swallow: bool):
    self.target = Consortium(target)
    self.swallow = swallow


@external
@payable
def join():
    extcall self.target.register(0, value=msg.value)


@external
def leave():
    extcall self.target.announce_exit()


@external
def finish():
    extcall self.target.complete_exit()


@external
def attack(amount: uint256):
    self.amount = amount
    extcall self.target.withdraw(amount)


@external
@payable
def __default__():
    if self.reentered == 0:
        self.reentered = 1
        if self.swallow:
            data: Bytes[36] = abi_encode(self.amount, method_id=method_id("withdraw(uint256)"))
            self.reentry_ok = raw_call(self.target.address, data, revert_on_failure=False)
        else:
            extcall self.target.withdraw(self.amount)
