// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @title Logos Chat identity registry: shared types, events, errors and views.
/// @notice Separate from the implementation so NameRegistry (and other readers) can use the
///         view structs without pulling in the registry's bytecode.
interface IIdentityRegistry {
    struct InstallationView {
        bytes32 installation;
        bytes32 bundleHash; // keccak256 of the latest bundle; 0 when revoked
        bytes32 pqKeyHash; // keccak256 of the latest post-quantum key record, 0 if none
        bool revoked;
    }

    struct IdentityView {
        bytes32 id; // 0 when the identity is unknown
        address owner;
        address recovery;
        uint64 createdBlock;
        InstallationView[] installations; // in the order they were added, revoked ones included
    }

    event IdentityRegistered(bytes32 indexed id, address indexed owner, address recovery);
    event OwnerChanged(bytes32 indexed id, address indexed previousOwner, address indexed newOwner);
    /// `tag` binds the new recovery phrase to the id (see IdentityRegistry.setRecovery).
    event RecoveryChanged(bytes32 indexed id, address recovery, bytes32 tag);
    event RecoveryChangeProposed(bytes32 indexed id, address recovery, bytes32 tag, uint64 readyAt);
    event RecoveryChangeCancelled(bytes32 indexed id, address recovery);
    event InstallationAdded(bytes32 indexed id, bytes32 indexed installation);
    event InstallationRevoked(bytes32 indexed id, bytes32 indexed installation);
    event BundlePublished(bytes32 indexed id, bytes32 indexed installation, bytes bundle);
    event PqKeyPublished(bytes32 indexed id, bytes32 indexed installation, bytes record);
    event WalletLinked(bytes32 indexed id, address indexed wallet);
    event WalletUnlinked(bytes32 indexed id, address indexed wallet);

    error NotAuthorized();
    error UnknownIdentity();
    error AlreadyRegistered();
    error InstallationExists();
    error InstallationNotActive();
    error InstallationWasRevoked();
    error InvalidInstallation();
    error SignatureExpired();
    error InvalidSignature();
    error ZeroAddress();
    error WalletNotLinked();
    error NoPendingRecovery();
    error RecoveryChangeNotReady();

    function getIdentity(bytes32 id) external view returns (IdentityView memory);
    function getIdentityByAccount(address account) external view returns (IdentityView memory);
    function identityOf(address account) external view returns (bytes32);
    function ownerOf(bytes32 id) external view returns (address);
}
