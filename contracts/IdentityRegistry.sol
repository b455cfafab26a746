// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IIdentityRegistry} from "./IIdentityRegistry.sol";

/// @title Logos Chat identity registry
/// @notice On-chain key directory: an identity (stable bytes32 id) has an owner account, an
///         optional recovery account, linked wallets and installations (devices). Storage keeps
///         only small fixed fields and hashes; bundle and key-record bytes live in event data.
/// @dev Access: owner OR recovery may add/revoke installations and publish bundles and PQ keys;
///      only the owner sets the recovery or links wallets; owner or recovery may replace the owner,
///      and the new owner must consent by EIP-712 signature. Naming a recovery account needs
///      no consent (anyone may name any address): the client binds its recovery phrase to the
///      id off-chain (the register salt, or setRecovery's logged tag, is an HMAC under a key
///      from the phrase) and recovery by phrase keeps only identities so bound, never a decoy
///      that merely names the same address. Every authorisation can also be
///      relayed (`*BySig`): EIP-712 over all parameters, the identity id, the value being replaced,
///      a per-signer nonce and a mandatory deadline. Nothing can be paused.
///      An ownership transfer keeps everything else: installations, recovery, linked wallets,
///      names (NameRegistry binds names to the id). A new owner who does not trust the old
///      recovery must call setRecovery.
///      Recovery changes by the owner are delayed: every device holds the owner key, so a
///      thief with a device could otherwise replace or clear the recovery account before the
///      user recovers. The owner's change waits RECOVERY_DELAY; until it is confirmed, the
///      current recovery account (or the owner) can cancel it, and the recovery account
///      taking the identity back (setOwner) cancels it. The recovery account changes it at once.
contract IdentityRegistry is IIdentityRegistry, EIP712 {
    /// One slot per identity.
    struct Identity {
        address owner;
        uint64 createdBlock;
        uint32 installationCount; // length of the installation list (revoked ones included)
    }

    /// A recovery change proposed by the owner (one slot); `readyAt` 0: none.
    struct PendingRecovery {
        address recovery;
        uint64 readyAt;
    }

    /// Marks a revoked installation in `_bundleHash`. 0 means "never added".
    bytes32 internal constant REVOKED = bytes32(uint256(1));

    /// How long an owner's change of an existing recovery account waits (and can be cancelled
    /// by that recovery account) before it can be confirmed.
    uint256 public constant RECOVERY_DELAY = 3 days;

    bytes32 internal constant REGISTER_TYPEHASH = keccak256(
        "Register(address owner,bytes32 salt,address recovery,bytes32 installation,bytes32 bundleHash,uint256 nonce,uint256 deadline)"
    );
    bytes32 internal constant ADD_INSTALLATION_TYPEHASH = keccak256(
        "AddInstallation(bytes32 id,bytes32 installation,bytes32 bundleHash,uint256 nonce,uint256 deadline)"
    );
    bytes32 internal constant REVOKE_INSTALLATION_TYPEHASH =
        keccak256("RevokeInstallation(bytes32 id,bytes32 installation,uint256 nonce,uint256 deadline)");
    bytes32 internal constant PUBLISH_BUNDLE_TYPEHASH = keccak256(
        "PublishBundle(bytes32 id,bytes32 installation,bytes32 bundleHash,bytes32 previousBundleHash,uint256 nonce,uint256 deadline)"
    );
    bytes32 internal constant SET_OWNER_TYPEHASH = keccak256(
        "SetOwner(bytes32 id,address currentOwner,address newOwner,uint256 nonce,uint256 deadline)"
    );
    bytes32 internal constant ACCEPT_OWNERSHIP_TYPEHASH = keccak256(
        "AcceptOwnership(bytes32 id,address newOwner,address currentOwner,uint256 nonce,uint256 deadline)"
    );
    bytes32 internal constant LINK_WALLET_TYPEHASH =
        keccak256("LinkWallet(bytes32 id,address wallet,uint256 nonce,uint256 deadline)");

    mapping(bytes32 id => Identity) internal _identities;
    mapping(bytes32 id => address) internal _recovery;
    mapping(address account => bytes32 id) internal _accountIdentity; // owners and linked wallets
    mapping(bytes32 id => mapping(bytes32 installation => bytes32)) internal _bundleHash;
    mapping(bytes32 id => mapping(bytes32 installation => bytes32)) internal _pqKeyHash;
    mapping(bytes32 id => mapping(uint256 index => bytes32 installation)) internal _installationAt;
    mapping(bytes32 id => PendingRecovery) internal _pendingRecovery;
    mapping(bytes32 id => bytes32 tag) internal _pendingRecoveryTag;

    /// Per-signer nonce for every EIP-712 authorisation (relayed calls, ownership and wallet
    /// consents).
    mapping(address signer => uint256) public nonces;

    constructor() EIP712("LogosChatIdentityRegistry", "1") {}

    // ------------------------------------------------------------------ direct calls

    /// @notice Create an identity owned by msg.sender, with its first installation and bundle.
    function register(bytes32 salt, address recovery, bytes32 installation, bytes calldata bundle)
        external
        returns (bytes32 id)
    {
        return _register(msg.sender, salt, recovery, installation, bundle);
    }

    function addInstallation(bytes32 id, bytes32 installation, bytes calldata bundle) external {
        _requireOwnerOrRecovery(id, msg.sender);
        _addInstallation(id, installation, bundle);
    }

    function revokeInstallation(bytes32 id, bytes32 installation) external {
        _requireOwnerOrRecovery(id, msg.sender);
        _revokeInstallation(id, installation);
    }

    /// @notice Replace the bundle of an active installation (e.g. signed-prekey rotation).
    /// @dev The hot path (signed-prekey rotation), so written in assembly: it does exactly what
    ///      `_requireOwnerOrRecovery(id, msg.sender); _publishBundle(id, installation, bundle);`
    ///      does, with fewer stack shuffles (gas target: <= 40k for a 290-byte bundle).
    function publishBundle(bytes32 id, bytes32 installation, bytes calldata bundle) external {
        bytes4 errUnknown = UnknownIdentity.selector;
        bytes4 errAuth = NotAuthorized.selector;
        bytes4 errInactive = InstallationNotActive.selector;
        bytes32 topic0 = BundlePublished.selector;
        assembly ("memory-safe") {
            mstore(0x00, id)
            mstore(0x20, _identities.slot)
            let owner_ := and(sload(keccak256(0x00, 0x40)), 0xffffffffffffffffffffffffffffffffffffffff)
            if iszero(eq(owner_, caller())) {
                if iszero(owner_) {
                    mstore(0x00, errUnknown)
                    revert(0x00, 0x04)
                }
                mstore(0x20, _recovery.slot)
                if iszero(eq(and(sload(keccak256(0x00, 0x40)), 0xffffffffffffffffffffffffffffffffffffffff), caller())) {
                    mstore(0x00, errAuth)
                    revert(0x00, 0x04)
                }
            }
            mstore(0x20, _bundleHash.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            mstore(0x00, installation)
            let slot := keccak256(0x00, 0x40)
            let cur := sload(slot)
            if or(iszero(cur), eq(cur, 1)) {
                mstore(0x00, errInactive)
                revert(0x00, 0x04)
            }
            let p := mload(0x40)
            let len := bundle.length
            let padded := and(add(len, 31), not(31))
            mstore(add(p, add(0x20, padded)), 0)
            mstore(p, 0x20)
            mstore(add(p, 0x20), len)
            calldatacopy(add(p, 0x40), bundle.offset, len)
            sstore(slot, keccak256(add(p, 0x40), len))
            log3(p, add(0x40, padded), topic0, id, installation)
        }
    }

    /// @notice Publish an active installation's post-quantum key record (hash kept, bytes in the event).
    function publishPqKey(bytes32 id, bytes32 installation, bytes calldata record) external {
        _requireOwnerOrRecovery(id, msg.sender);
        bytes32 cur = _bundleHash[id][installation];
        if (cur == 0 || cur == REVOKED) revert InstallationNotActive();
        _pqKeyHash[id][installation] = _hashAndLog(PqKeyPublished.selector, id, installation, record);
    }

    /// @notice Owner or recovery replaces the owner. `newOwnerSig` is the new owner's EIP-712
    ///         AcceptOwnership consent; it is not needed when the caller is the new owner.
    function setOwner(bytes32 id, address newOwner, uint256 deadline, bytes calldata newOwnerSig)
        external
    {
        address current = _requireOwnerOrRecovery(id, msg.sender);
        if (msg.sender != newOwner) _checkAcceptOwnership(id, newOwner, current, deadline, newOwnerSig);
        if (msg.sender != current) _cancelPendingRecovery(id); // the recovery takes it back
        _setOwner(id, current, newOwner);
    }

    /// @notice Set or clear (address(0)) the recovery account. `tag` is not checked here,
    ///         only logged: the client puts HMAC(key from the new recovery phrase, chain,
    ///         registry, id) in it, so the phrase's holder can tell this identity from decoys
    ///         that name the same (public) recovery address (anyone may name any address).
    /// @dev The current recovery account changes it at once. The owner does so at once only
    ///      while there is no recovery account; otherwise the change is proposed
    ///      (`RecoveryChangeProposed`, replacing any earlier proposal) and takes effect with
    ///      `confirmRecovery` once RECOVERY_DELAY has passed.
    function setRecovery(bytes32 id, address newRecovery, bytes32 tag) external {
        address owner_ = _requireExists(id);
        address current = _recovery[id];
        if (msg.sender == owner_ && current != address(0)) {
            uint64 readyAt = uint64(block.timestamp + RECOVERY_DELAY);
            _pendingRecovery[id] = PendingRecovery(newRecovery, readyAt);
            _pendingRecoveryTag[id] = tag;
            emit RecoveryChangeProposed(id, newRecovery, tag, readyAt);
            return;
        }
        if (msg.sender != owner_ && (msg.sender != current || current == address(0))) {
            revert NotAuthorized();
        }
        _cancelPendingRecovery(id);
        _recovery[id] = newRecovery;
        emit RecoveryChanged(id, newRecovery, tag);
    }

    /// @notice Anyone applies the owner's proposed recovery change once its delay has passed.
    function confirmRecovery(bytes32 id) external {
        PendingRecovery memory p = _pendingRecovery[id];
        if (p.readyAt == 0) revert NoPendingRecovery();
        if (block.timestamp < p.readyAt) revert RecoveryChangeNotReady();
        bytes32 tag = _pendingRecoveryTag[id];
        delete _pendingRecovery[id];
        delete _pendingRecoveryTag[id];
        _recovery[id] = p.recovery;
        emit RecoveryChanged(id, p.recovery, tag);
    }

    /// @notice Owner or recovery cancels a proposed recovery change.
    function cancelRecoveryChange(bytes32 id) external {
        _requireOwnerOrRecovery(id, msg.sender);
        if (_pendingRecovery[id].readyAt == 0) revert NoPendingRecovery();
        _cancelPendingRecovery(id);
    }

    /// @notice The owner's proposed recovery change (readyAt 0: none).
    function pendingRecovery(bytes32 id)
        external
        view
        returns (address recovery, uint64 readyAt, bytes32 tag)
    {
        PendingRecovery memory p = _pendingRecovery[id];
        return (p.recovery, p.readyAt, _pendingRecoveryTag[id]);
    }

    /// @notice Owner links a wallet; the wallet consents with an EIP-712 LinkWallet signature.
    function linkWallet(bytes32 id, address wallet, uint256 deadline, bytes calldata walletSig)
        external
    {
        if (_requireExists(id) != msg.sender) revert NotAuthorized();
        if (wallet == address(0)) revert ZeroAddress();
        _checkDeadline(deadline);
        _verify(
            wallet,
            keccak256(abi.encode(LINK_WALLET_TYPEHASH, id, wallet, _useNonce(wallet), deadline)),
            walletSig
        );
        if (_accountIdentity[wallet] != 0) revert AlreadyRegistered();
        _accountIdentity[wallet] = id;
        emit WalletLinked(id, wallet);
    }

    /// @notice Owner, recovery or the wallet itself removes a wallet link.
    function unlinkWallet(bytes32 id, address wallet) external {
        address owner_ = _requireExists(id);
        if (msg.sender != owner_ && msg.sender != wallet && msg.sender != _recovery[id]) {
            revert NotAuthorized();
        }
        if (wallet == owner_ || _accountIdentity[wallet] != id) revert WalletNotLinked();
        delete _accountIdentity[wallet];
        emit WalletUnlinked(id, wallet);
    }

    /// @notice Consume the caller's current nonce, cancelling every outstanding signature made
    ///         with it. Returns the nonce that was consumed.
    function useNonce() external returns (uint256) {
        return _useNonce(msg.sender);
    }

    // ------------------------------------------------------------------ relayed calls

    /// @notice Register on behalf of `owner`, who signed Register(...). Any account may submit.
    function registerBySig(
        address owner,
        bytes32 salt,
        address recovery,
        bytes32 installation,
        bytes calldata bundle,
        uint256 deadline,
        bytes calldata sig
    ) external returns (bytes32 id) {
        _checkDeadline(deadline);
        _verify(
            owner, _registerStructHash(owner, salt, recovery, installation, keccak256(bundle), deadline), sig
        );
        return _register(owner, salt, recovery, installation, bundle);
    }

    /// @notice `signer` (owner or recovery) signed AddInstallation(...).
    function addInstallationBySig(
        bytes32 id,
        bytes32 installation,
        bytes calldata bundle,
        address signer,
        uint256 deadline,
        bytes calldata sig
    ) external {
        _requireOwnerOrRecovery(id, signer);
        _checkDeadline(deadline);
        _verify(
            signer,
            keccak256(
                abi.encode(
                    ADD_INSTALLATION_TYPEHASH,
                    id,
                    installation,
                    keccak256(bundle),
                    _useNonce(signer),
                    deadline
                )
            ),
            sig
        );
        _addInstallation(id, installation, bundle);
    }

    /// @notice `signer` (owner or recovery) signed RevokeInstallation(...).
    function revokeInstallationBySig(
        bytes32 id,
        bytes32 installation,
        address signer,
        uint256 deadline,
        bytes calldata sig
    ) external {
        _requireOwnerOrRecovery(id, signer);
        _checkDeadline(deadline);
        _verify(
            signer,
            keccak256(
                abi.encode(REVOKE_INSTALLATION_TYPEHASH, id, installation, _useNonce(signer), deadline)
            ),
            sig
        );
        _revokeInstallation(id, installation);
    }

    /// @notice `signer` (owner or recovery) signed PublishBundle(...), which names the bundle hash
    ///         it replaces, so a stale signature cannot roll a bundle back.
    function publishBundleBySig(
        bytes32 id,
        bytes32 installation,
        bytes calldata bundle,
        address signer,
        uint256 deadline,
        bytes calldata sig
    ) external {
        _requireOwnerOrRecovery(id, signer);
        _checkDeadline(deadline);
        _verify(
            signer,
            keccak256(
                abi.encode(
                    PUBLISH_BUNDLE_TYPEHASH,
                    id,
                    installation,
                    keccak256(bundle),
                    _bundleHash[id][installation],
                    _useNonce(signer),
                    deadline
                )
            ),
            sig
        );
        _publishBundle(id, installation, bundle);
    }

    /// @notice `signer` (owner or recovery) signed SetOwner(...) naming the current owner, and
    ///         `newOwner` signed AcceptOwnership(...). Both use `deadline`; the signer's nonce is
    ///         consumed first.
    function setOwnerBySig(
        bytes32 id,
        address newOwner,
        address signer,
        uint256 deadline,
        bytes calldata signerSig,
        bytes calldata newOwnerSig
    ) external {
        address current = _requireOwnerOrRecovery(id, signer);
        _checkDeadline(deadline);
        _verify(
            signer,
            keccak256(
                abi.encode(SET_OWNER_TYPEHASH, id, current, newOwner, _useNonce(signer), deadline)
            ),
            signerSig
        );
        _checkAcceptOwnership(id, newOwner, current, deadline, newOwnerSig);
        if (signer != current) _cancelPendingRecovery(id); // the recovery takes it back
        _setOwner(id, current, newOwner);
    }

    // ------------------------------------------------------------------ views

    function getIdentity(bytes32 id) public view returns (IdentityView memory v) {
        Identity memory s = _identities[id];
        if (s.owner == address(0)) return v;
        v.id = id;
        v.owner = s.owner;
        v.recovery = _recovery[id];
        v.createdBlock = s.createdBlock;
        uint256 n = s.installationCount;
        v.installations = new InstallationView[](n);
        for (uint256 i = 0; i < n; ++i) {
            bytes32 inst = _installationAt[id][i];
            bytes32 h = _bundleHash[id][inst];
            bool revoked = h == REVOKED;
            v.installations[i] = InstallationView({
                installation: inst,
                bundleHash: revoked ? bytes32(0) : h,
                pqKeyHash: _pqKeyHash[id][inst],
                revoked: revoked
            });
        }
    }

    /// @notice The identity an account owns or is linked to (empty view, id 0, when none).
    function getIdentityByAccount(address account) external view returns (IdentityView memory) {
        return getIdentity(_accountIdentity[account]);
    }

    function identityOf(address account) external view returns (bytes32) {
        return _accountIdentity[account];
    }

    /// @notice Owner of an identity, address(0) when unknown.
    function ownerOf(bytes32 id) external view returns (address) {
        return _identities[id].owner;
    }

    /// @notice The id `owner` gets from register(salt, ...).
    function identityIdFor(address owner, bytes32 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(owner, salt));
    }

    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ------------------------------------------------------------------ internals

    function _register(
        address owner,
        bytes32 salt,
        address recovery,
        bytes32 installation,
        bytes calldata bundle
    ) internal returns (bytes32 id) {
        if (installation == 0) revert InvalidInstallation();
        if (_accountIdentity[owner] != 0) revert AlreadyRegistered();
        id = keccak256(abi.encode(owner, salt));
        // An id survives its owner moving away, so the same (owner, salt) can't be reused.
        if (_identities[id].owner != address(0)) revert AlreadyRegistered();
        _identities[id] = Identity(owner, uint64(block.number), 1);
        _accountIdentity[owner] = id;
        if (recovery != address(0)) _recovery[id] = recovery;
        emit IdentityRegistered(id, owner, recovery);
        // A fresh id has no installations yet: no existence check needed.
        _installationAt[id][0] = installation;
        emit InstallationAdded(id, installation);
        _sstore(
            _bundleSlot(id, installation),
            _hashAndLog(BundlePublished.selector, id, installation, bundle)
        );
    }

    function _registerStructHash(
        address owner,
        bytes32 salt,
        address recovery,
        bytes32 installation,
        bytes32 bundleHash,
        uint256 deadline
    ) internal returns (bytes32) {
        return keccak256(
            abi.encode(
                REGISTER_TYPEHASH, owner, salt, recovery, installation, bundleHash, _useNonce(owner), deadline
            )
        );
    }

    function _addInstallation(bytes32 id, bytes32 installation, bytes calldata bundle) internal {
        if (installation == 0) revert InvalidInstallation();
        uint256 slot = _bundleSlot(id, installation);
        bytes32 cur = _sload(slot);
        if (cur != 0) {
            if (cur == REVOKED) revert InstallationWasRevoked();
            revert InstallationExists();
        }
        Identity storage s = _identities[id];
        uint32 n = s.installationCount;
        s.installationCount = n + 1;
        _installationAt[id][n] = installation;
        emit InstallationAdded(id, installation);
        _sstore(slot, _hashAndLog(BundlePublished.selector, id, installation, bundle));
    }

    function _revokeInstallation(bytes32 id, bytes32 installation) internal {
        bytes32 cur = _bundleHash[id][installation];
        if (cur == 0 || cur == REVOKED) revert InstallationNotActive();
        _bundleHash[id][installation] = REVOKED;
        emit InstallationRevoked(id, installation);
    }

    function _publishBundle(bytes32 id, bytes32 installation, bytes calldata bundle) internal {
        uint256 slot = _bundleSlot(id, installation);
        bytes32 cur = _sload(slot);
        if (cur == 0 || cur == REVOKED) revert InstallationNotActive();
        _sstore(slot, _hashAndLog(BundlePublished.selector, id, installation, bundle));
    }

    function _setOwner(bytes32 id, address current, address newOwner) internal {
        if (newOwner == address(0)) revert ZeroAddress();
        if (_accountIdentity[newOwner] != 0) revert AlreadyRegistered();
        delete _accountIdentity[current];
        _accountIdentity[newOwner] = id;
        _identities[id].owner = newOwner;
        emit OwnerChanged(id, current, newOwner);
    }

    function _checkAcceptOwnership(
        bytes32 id,
        address newOwner,
        address current,
        uint256 deadline,
        bytes calldata sig
    ) internal {
        if (newOwner == address(0)) revert ZeroAddress();
        _checkDeadline(deadline);
        _verify(
            newOwner,
            keccak256(
                abi.encode(
                    ACCEPT_OWNERSHIP_TYPEHASH, id, newOwner, current, _useNonce(newOwner), deadline
                )
            ),
            sig
        );
    }

    /// Storage slot of `_bundleHash[id][installation]` (computed once for a load and a store).
    function _bundleSlot(bytes32 id, bytes32 installation) internal pure returns (uint256 slot) {
        assembly ("memory-safe") {
            mstore(0x00, id)
            mstore(0x20, _bundleHash.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            mstore(0x00, installation)
            slot := keccak256(0x00, 0x40)
        }
    }

    function _sload(uint256 slot) internal view returns (bytes32 v) {
        assembly ("memory-safe") {
            v := sload(slot)
        }
    }

    function _sstore(uint256 slot, bytes32 v) internal {
        assembly ("memory-safe") {
            sstore(slot, v)
        }
    }

    /// Emits `topic0(id, installation, data)` (an event with two indexed bytes32 and one `bytes`)
    /// and returns keccak256(data), copying `data` into memory once for both.
    function _hashAndLog(bytes32 topic0, bytes32 id, bytes32 installation, bytes calldata data)
        internal
        returns (bytes32 h)
    {
        assembly ("memory-safe") {
            let p := mload(0x40)
            let len := data.length
            let padded := and(add(len, 31), not(31))
            mstore(add(p, add(0x20, padded)), 0) // clean ABI padding of the last word
            mstore(p, 0x20)
            mstore(add(p, 0x20), len)
            calldatacopy(add(p, 0x40), data.offset, len)
            h := keccak256(add(p, 0x40), len)
            log3(p, add(0x40, padded), topic0, id, installation)
        }
    }

    function _cancelPendingRecovery(bytes32 id) internal {
        PendingRecovery memory p = _pendingRecovery[id];
        if (p.readyAt == 0) return;
        delete _pendingRecovery[id];
        delete _pendingRecoveryTag[id];
        emit RecoveryChangeCancelled(id, p.recovery);
    }

    /// Returns the owner; reverts UnknownIdentity.
    function _requireExists(bytes32 id) internal view returns (address owner_) {
        owner_ = _identities[id].owner;
        if (owner_ == address(0)) revert UnknownIdentity();
    }

    /// Returns the owner; reverts unless `who` is the owner or the recovery of `id`.
    function _requireOwnerOrRecovery(bytes32 id, address who) internal view returns (address owner_) {
        owner_ = _requireExists(id);
        if (who != owner_ && (who == address(0) || who != _recovery[id])) revert NotAuthorized();
    }

    function _checkDeadline(uint256 deadline) internal view {
        // 0 never means "no expiry".
        if (deadline == 0 || deadline < block.timestamp) revert SignatureExpired();
    }

    function _useNonce(address signer) internal returns (uint256) {
        unchecked {
            return nonces[signer]++;
        }
    }

    /// OpenZeppelin ECDSA: 65-byte signatures only, high-s and invalid v rejected.
    function _verify(address signer, bytes32 structHash, bytes calldata sig) internal view {
        (address recovered, ECDSA.RecoverError err,) =
            ECDSA.tryRecoverCalldata(_hashTypedDataV4(structHash), sig);
        if (err != ECDSA.RecoverError.NoError || recovered != signer || signer == address(0)) {
            revert InvalidSignature();
        }
    }
}
