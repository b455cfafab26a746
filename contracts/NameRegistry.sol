// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {IIdentityRegistry} from "./IIdentityRegistry.sol";

/// @title Logos Chat names: first come, first served, claimed by commit–reveal (ENS style).
/// @notice commit(keccak256(abi.encode(name, id, owner, secret))), wait at least
///         `minCommitBlocks` blocks (at most `maxCommitBlocks`), then claim(name, id, secret)
///         from `owner`, which must be the identity's current owner. The commitment binds the
///         name, the identity, the claiming account and the secret, so a watcher who copies the
///         reveal cannot use it. Names are bound to the identity id and survive owner changes.
contract NameRegistry {
    IIdentityRegistry public immutable identityRegistry;
    uint64 public immutable minCommitBlocks;
    uint64 public immutable maxCommitBlocks;

    /// commitment => block number it was made in (0 = none)
    mapping(bytes32 commitment => uint256 blockNumber) public commitments;
    mapping(bytes32 nameHash => bytes32 id) internal _names;

    event NameClaimed(bytes32 indexed id, bytes32 indexed nameHash, string name);
    event NameReleased(bytes32 indexed id, bytes32 indexed nameHash, string name);

    error InvalidName();
    error NameTaken();
    error NameNotClaimed();
    error NotAuthorized();
    error CommitmentExists();
    error CommitmentNotFound();
    error CommitmentTooNew();
    error CommitmentTooOld();
    error InvalidCommitWindow();

    constructor(address identityRegistry_, uint64 minCommitBlocks_, uint64 maxCommitBlocks_) {
        if (minCommitBlocks_ == 0 || maxCommitBlocks_ < minCommitBlocks_) revert InvalidCommitWindow();
        identityRegistry = IIdentityRegistry(identityRegistry_);
        minCommitBlocks = minCommitBlocks_;
        maxCommitBlocks = maxCommitBlocks_;
    }

    /// @notice The commitment `owner` must commit before claiming `name` for identity `id`.
    function makeCommitment(string calldata name, bytes32 id, address owner, bytes32 secret)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(name, id, owner, secret));
    }

    /// @notice Record a commitment. Re-committing one that is still live reverts (it would
    ///         otherwise reset the clock); an expired one may be committed again.
    function commit(bytes32 commitment) external {
        uint256 made = commitments[commitment];
        if (made != 0 && block.number <= made + maxCommitBlocks) revert CommitmentExists();
        commitments[commitment] = block.number;
    }

    /// @notice Reveal and claim. msg.sender must own `id` now and have committed to exactly these
    ///         parameters between minCommitBlocks and maxCommitBlocks blocks ago.
    function claim(string calldata name, bytes32 id, bytes32 secret) external {
        if (!isValidName(name)) revert InvalidName();
        if (id == 0 || identityRegistry.ownerOf(id) != msg.sender) revert NotAuthorized();
        bytes32 commitment = keccak256(abi.encode(name, id, msg.sender, secret));
        uint256 made = commitments[commitment];
        if (made == 0) revert CommitmentNotFound();
        uint256 age = block.number - made;
        if (age < minCommitBlocks) revert CommitmentTooNew();
        if (age > maxCommitBlocks) revert CommitmentTooOld();
        delete commitments[commitment];
        bytes32 nameHash = keccak256(bytes(name));
        if (_names[nameHash] != 0) revert NameTaken();
        _names[nameHash] = id;
        emit NameClaimed(id, nameHash, name);
    }

    /// @notice The owner of the identity holding `name` gives it up.
    function release(string calldata name) external {
        bytes32 nameHash = keccak256(bytes(name));
        bytes32 id = _names[nameHash];
        if (id == 0) revert NameNotClaimed();
        if (identityRegistry.ownerOf(id) != msg.sender) revert NotAuthorized();
        delete _names[nameHash];
        emit NameReleased(id, nameHash, name);
    }

    /// @notice Identity holding `name` (0 when unclaimed).
    function nameOwner(string calldata name) external view returns (bytes32) {
        return _names[keccak256(bytes(name))];
    }

    /// @notice The identity holding `name`, empty (id 0) when unclaimed.
    function resolveName(string calldata name)
        external
        view
        returns (IIdentityRegistry.IdentityView memory v)
    {
        bytes32 id = _names[keccak256(bytes(name))];
        if (id != 0) v = identityRegistry.getIdentity(id);
    }

    /// @notice 3–32 characters of [a-z0-9-_], not starting with '-'.
    function isValidName(string calldata name) public pure returns (bool) {
        bytes calldata b = bytes(name);
        uint256 n = b.length;
        if (n < 3 || n > 32 || b[0] == "-") return false;
        for (uint256 i = 0; i < n; ++i) {
            bytes1 c = b[i];
            if (!((c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "-" || c == "_")) {
                return false;
            }
        }
        return true;
    }
}
