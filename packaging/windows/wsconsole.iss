; Inno Setup script for wsconsole on Windows (Inno Setup 6).
;
;   python packaging\build.py                  -> dist\wsconsole\ (PyInstaller one-folder)
;   iscc /DAppVersion=0.1.0 packaging\windows\wsconsole.iss
;                                              -> dist\wsconsole-0.1.0-windows-x64-setup.exe
;
; Per-user install by default (no admin prompt), per-machine when the user chooses it.
; Start-menu entry runs the windowed wsconsole-gui.exe; wsconsole.exe is the console
; executable for `wsconsole diagnose ...`, `wsconsole --self-test` and the harness children.
; NOT BUILT OR RUN on the Linux machine where this was written: see docs/packaging.md.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#define AppName "wsconsole"
#define Dist "..\..\dist\wsconsole"

[Setup]
AppId={{7D3F2A51-6C1E-4B7A-9A0E-5C2B8E4D9F13}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=wsconsole maintainers
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename={#AppName}-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\build\pyinstaller\icons\wsconsole.ico
UninstallDisplayIcon={app}\wsconsole-gui.exe
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
ChangesEnvironment=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add wsconsole to PATH (for wsconsole diagnose / --self-test)"; Flags: unchecked

[Files]
Source: "{#Dist}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\wsconsole-gui.exe"
Name: "{group}\{#AppName} self-test"; Filename: "{cmd}"; Parameters: "/k ""{app}\wsconsole.exe"" --self-test --redis redis://127.0.0.1:6379/0"
Name: "{group}\Uninstall {#AppName}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\wsconsole-gui.exe"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\wsconsole-gui.exe"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Path: string;
begin
  if not RegQueryStringValue(HKCU, 'Environment', 'Path', Path) then
    Path := '';
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';') = 0;
end;
